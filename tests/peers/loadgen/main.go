// loadgen sends DNS queries over UDP at a fixed rate and records every
// reply, for dnsveil's load and fault tests: which query got how many
// replies, when, with which rcode and first A address. Query i asks
// "KIND.i.RUN.ZONE" A, its kind drawn in turn from -mix, so every name is
// unique; kind "hot" asks one of -hot-pool names again and again. The queries are spread over -sockets sockets; a reply is matched
// by its socket and ID and must carry the question asked.
//
// Output: one line per query to -out ("i kind sent_unix_ns rtt_us rcode
// replies addr"; rtt_us and rcode are -1 for a query never answered) and a
// summary line on stdout.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

type record struct {
	sent    int64 // unix ns
	recv    int64 // unix ns of the first reply
	rcode   int
	replies int
	addr    string
}

func main() {
	server := flag.String("server", "127.0.0.1:53", "where to send")
	rate := flag.Float64("rate", 1000, "queries per second")
	count := flag.Int("count", 1000, "queries to send")
	nsock := flag.Int("sockets", 16, "client sockets")
	mix := flag.String("mix", "q:1", "kinds and weights, e.g. good:80,nx:5,drop:5")
	zone := flag.String("zone", "load.test.", "zone the names are made under")
	run := flag.String("run", strconv.FormatInt(time.Now().UnixNano()%1000000, 36), "run tag in every name")
	wait := flag.Duration("wait", 6*time.Second, "how long to wait for replies after the last query")
	outPath := flag.String("out", "", "file for the per-query lines")
	hotPool := flag.Int("hot-pool", 100, "kind \"hot\" asks hot.(i mod this).ZONE, the same names again (cache hits)")
	flag.Parse()

	var kinds []string
	for _, part := range strings.Split(*mix, ",") {
		kv := strings.SplitN(part, ":", 2)
		n := 1
		if len(kv) == 2 {
			n, _ = strconv.Atoi(kv[1])
		}
		for j := 0; j < n; j++ {
			kinds = append(kinds, kv[0])
		}
	}
	if *count / *nsock >= 65536 {
		log.Fatalf("too many queries for %d sockets (IDs would repeat)", *nsock)
	}
	names := make([]string, *count)
	kindOf := make([]string, *count)
	for i := range names {
		kindOf[i] = kinds[i%len(kinds)]
		if kindOf[i] == "hot" {
			names[i] = fmt.Sprintf("hot.%d.%s", i%*hotPool, *zone)
		} else {
			names[i] = fmt.Sprintf("%s.%d.%s.%s", kindOf[i], i, *run, *zone)
		}
	}
	recs := make([]record, *count)
	for i := range recs {
		recs[i].rcode = -1
	}

	socks := make([]*net.UDPConn, *nsock)
	raddr, err := net.ResolveUDPAddr("udp", *server)
	if err != nil {
		log.Fatal(err)
	}
	var wg sync.WaitGroup
	strays := make([]int, *nsock)
	for s := range socks {
		c, err := net.DialUDP("udp", nil, raddr)
		if err != nil {
			log.Fatal(err)
		}
		c.SetReadBuffer(4 << 20)
		socks[s] = c
		wg.Add(1)
		go func(s int, c *net.UDPConn) { // each socket's records are its own
			defer wg.Done()
			buf := make([]byte, 65535)
			for {
				n, err := c.Read(buf)
				if err != nil {
					if ne, ok := err.(net.Error); ok && !ne.Timeout() && strings.Contains(err.Error(), "refused") {
						continue
					}
					return
				}
				now := time.Now().UnixNano()
				m := new(dns.Msg)
				if m.Unpack(buf[:n]) != nil {
					strays[s]++
					continue
				}
				i := int(m.Id)*(*nsock) + s
				if i >= *count || len(m.Question) != 1 ||
					!strings.EqualFold(m.Question[0].Name, names[i]) {
					strays[s]++
					continue
				}
				r := &recs[i]
				r.replies++
				if r.replies > 1 {
					continue
				}
				r.recv = now
				r.rcode = m.Rcode
				for _, rr := range m.Answer {
					if a, ok := rr.(*dns.A); ok {
						r.addr = a.A.String()
						break
					}
				}
			}
		}(s, c)
	}

	start := time.Now()
	interval := float64(time.Second) / *rate
	for i := 0; i < *count; i++ {
		due := start.Add(time.Duration(float64(i) * interval))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		q := new(dns.Msg)
		q.SetQuestion(names[i], dns.TypeA)
		q.Id = uint16(i / *nsock)
		q.RecursionDesired = true
		wire, _ := q.Pack()
		recs[i].sent = time.Now().UnixNano()
		socks[i%*nsock].Write(wire)
	}
	elapsed := time.Since(start)
	deadline := time.Now().Add(*wait)
	for _, c := range socks {
		c.SetReadDeadline(deadline)
	}
	wg.Wait()

	tally := map[string]int{}
	var lost, dup, strayN int
	var maxRtt int64
	for _, n := range strays {
		strayN += n
	}
	var w *bufio.Writer
	if *outPath != "" {
		f, err := os.Create(*outPath)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		w = bufio.NewWriter(f)
		defer w.Flush()
	}
	for i, r := range recs {
		rtt := int64(-1)
		if r.replies == 0 {
			lost++
		} else {
			rtt = (r.recv - r.sent) / 1000
			if rtt > maxRtt {
				maxRtt = rtt
			}
			tally[dns.RcodeToString[r.rcode]]++
		}
		if r.replies > 1 {
			dup++
		}
		if w != nil {
			addr := r.addr
			if addr == "" {
				addr = "-"
			}
			fmt.Fprintf(w, "%d %s %d %d %d %d %s\n", i, kindOf[i], r.sent, rtt, r.rcode, r.replies, addr)
		}
	}
	parts := []string{}
	for k, v := range tally {
		parts = append(parts, fmt.Sprintf("%s=%d", strings.ToLower(k), v))
	}
	fmt.Printf("sent=%d lost=%d duplicated=%d strays=%d max_rtt_ms=%.1f send_s=%.2f %s\n",
		*count, lost, dup, strayN, float64(maxRtt)/1000, elapsed.Seconds(), strings.Join(parts, " "))
}
