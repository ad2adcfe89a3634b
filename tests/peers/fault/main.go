// faultpeer is a DNS server for dnsveil's fault tests. It answers every
// name itself (A -addr, TTL 300) over plain UDP and TCP, DoT, DoH (HTTP/2)
// and DoQ, speaking each protocol properly up to the point where the first
// label of the query name tells it to misbehave:
//
//	nx       NXDOMAIN            sf       SERVFAIL
//	drop     no answer at all    slow     answer after 1 s
//	vslow    answer after 4 s    tc       TC over UDP (full answer over TCP)
//	garbage  random bytes in place of the message (after the ID, with QR)
//	trunc    the answer cut in the middle of its record
//	badid    the answer with another ID
//	wrongq   the answer to another question
//	tcstream TC set over a stream transport too
//	zerolen  a 0-length frame (DoH: an empty 200 body)
//	ctype    DoH: 200 with text/html (the body is a good answer)
//	rst      DoH/DoQ: half the answer, then the stream is reset
//	half     half the answer, then the connection is reset (TCP RST; DoQ:
//	         CONNECTION_CLOSE)
//
// Anything else gets the good answer. With -log-queries every query is
// printed as "q TRANSPORT NAME" so a test can count what reached it.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lucas-clemente/quic-go"
	"github.com/miekg/dns"
)

var (
	answerAddr net.IP
	logQueries bool
	outMu      sync.Mutex
	out        = bufio.NewWriter(os.Stdout)
)

func say(format string, a ...interface{}) {
	outMu.Lock()
	fmt.Fprintf(out, format+"\n", a...)
	outMu.Unlock()
}

// kind is the first label of the question, lower-cased.
func kind(q *dns.Msg) string {
	if len(q.Question) == 0 {
		return ""
	}
	name := strings.ToLower(q.Question[0].Name)
	if i := strings.IndexByte(name, '.'); i >= 0 {
		return name[:i]
	}
	return name
}

// reply builds the answer the name asks for (good, NXDOMAIN, SERVFAIL,
// TC, another question or another ID); the byte-level faults are applied
// by the transports.
func reply(q *dns.Msg, k string, stream bool) *dns.Msg {
	r := new(dns.Msg)
	r.SetReply(q)
	r.RecursionAvailable = true
	switch k {
	case "nx":
		r.Rcode = dns.RcodeNameError
		return r
	case "sf":
		r.Rcode = dns.RcodeServerFailure
		return r
	case "tc":
		if !stream {
			r.Truncated = true
			return r
		}
	case "tcstream":
		r.Truncated = true
	case "badid":
		r.Id = q.Id + 1
	case "wrongq":
		r.Question[0].Name = "other." + r.Question[0].Name
	}
	if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA {
		r.Answer = append(r.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA,
				Class: dns.ClassINET, Ttl: 300},
			A: answerAddr,
		})
	}
	return r
}

// delay sleeps for the slow names; false for names never answered.
func delay(k string) bool {
	switch k {
	case "drop":
		return false
	case "slow":
		time.Sleep(time.Second)
	case "vslow":
		time.Sleep(4 * time.Second)
	}
	return true
}

func garbage(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// answerBytes is the wire form of the answer with the byte-level faults
// (garbage, trunc) applied; nil for a name never answered.
func answerBytes(q *dns.Msg, k string, stream bool) []byte {
	if !delay(k) {
		return nil
	}
	wire, err := reply(q, k, stream).Pack()
	if err != nil {
		return nil
	}
	switch k {
	case "garbage":
		// the query's ID and QR, so the bytes are taken as the reply
		g := garbage(48)
		binary.BigEndian.PutUint16(g, q.Id)
		g[2] |= 0x80
		return g
	case "trunc":
		return wire[:len(wire)-7]
	}
	return wire
}

func parse(wire []byte, transport string) (*dns.Msg, string, bool) {
	q := new(dns.Msg)
	if err := q.Unpack(wire); err != nil || len(q.Question) != 1 {
		return nil, "", false
	}
	k := kind(q)
	if logQueries {
		say("q %s %s", transport, strings.ToLower(q.Question[0].Name))
	}
	return q, k, true
}

// ---- plain UDP

func serveUDP(pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		wire := append([]byte(nil), buf[:n]...)
		go func() {
			q, k, ok := parse(wire, "udp")
			if !ok {
				return
			}
			if a := answerBytes(q, k, false); a != nil {
				pc.WriteTo(a, addr)
			}
		}()
	}
}

// ---- TCP and DoT: RFC 1035 framing, pipelined, answers in any order

func resetConn(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tcp, ok := c.(*net.TCPConn); ok {
		tcp.SetLinger(0)
	}
	c.Close()
}

func serveStreamConn(c net.Conn, transport string) {
	defer c.Close()
	var wmu sync.Mutex
	write := func(b []byte) {
		wmu.Lock()
		c.Write(b)
		wmu.Unlock()
	}
	r := bufio.NewReader(c)
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		wire := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(r, wire); err != nil {
			return
		}
		q, k, ok := parse(wire, transport)
		if !ok {
			return
		}
		go func() {
			a := answerBytes(q, k, true)
			if a == nil {
				return
			}
			if k == "zerolen" {
				write([]byte{0, 0})
				return
			}
			frame := make([]byte, 2+len(a))
			binary.BigEndian.PutUint16(frame, uint16(len(a)))
			copy(frame[2:], a)
			if k == "half" {
				wmu.Lock()
				c.Write(frame[:len(frame)/2])
				time.Sleep(50 * time.Millisecond)
				resetConn(c)
				wmu.Unlock()
				return
			}
			write(frame)
		}()
	}
}

func serveStream(ln net.Listener, transport string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go serveStreamConn(c, transport)
	}
}

// ---- DoH over HTTP/2 (RFC 8484)

type connKey struct{}

func dohHandler(w http.ResponseWriter, req *http.Request) {
	var wire []byte
	var err error
	switch req.Method {
	case http.MethodPost:
		wire, err = io.ReadAll(io.LimitReader(req.Body, 65535))
	case http.MethodGet:
		wire, err = base64.RawURLEncoding.DecodeString(req.URL.Query().Get("dns"))
	default:
		http.Error(w, "method", http.StatusMethodNotAllowed)
		return
	}
	if err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	q, k, ok := parse(wire, "doh")
	if !ok {
		http.Error(w, "bad query", http.StatusBadRequest)
		return
	}
	a := answerBytes(q, k, true)
	if a == nil {
		<-req.Context().Done() // never answered: hold the stream
		return
	}
	if k == "badid" { // DoH queries carry ID 0; answer with another one
		binary.BigEndian.PutUint16(a, 0x4242)
	}
	ctype := "application/dns-message"
	if k == "ctype" {
		ctype = "text/html"
	}
	if k == "zerolen" {
		a = nil
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", "max-age=300")
	if k == "rst" || k == "half" {
		w.WriteHeader(http.StatusOK)
		w.Write(a[:len(a)/2])
		w.(http.Flusher).Flush()
		time.Sleep(50 * time.Millisecond)
		if k == "half" {
			resetConn(req.Context().Value(connKey{}).(net.Conn))
		}
		panic(http.ErrAbortHandler) // RST_STREAM
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(a)))
	w.WriteHeader(http.StatusOK)
	w.Write(a)
}

// ---- DoQ (RFC 9250): one query per stream, ID 0

func serveDoQ(ln quic.Listener) {
	for {
		c, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		go func() {
			for {
				st, err := c.AcceptStream(context.Background())
				if err != nil {
					return
				}
				go serveDoQStream(c, st)
			}
		}()
	}
}

func serveDoQStream(c quic.Connection, st quic.Stream) {
	var hdr [2]byte
	if _, err := io.ReadFull(st, hdr[:]); err != nil {
		return
	}
	wire := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(st, wire); err != nil {
		return
	}
	q, k, ok := parse(wire, "doq")
	if !ok {
		c.CloseWithError(2, "bad query") // DOQ_PROTOCOL_ERROR
		return
	}
	a := answerBytes(q, k, true)
	if a == nil {
		return
	}
	if k == "badid" {
		binary.BigEndian.PutUint16(a, 0x4242)
	}
	if k == "zerolen" {
		st.Write([]byte{0, 0})
		st.Close()
		return
	}
	frame := make([]byte, 2+len(a))
	binary.BigEndian.PutUint16(frame, uint16(len(a)))
	copy(frame[2:], a)
	switch k {
	case "rst":
		st.Write(frame[:len(frame)/2])
		time.Sleep(50 * time.Millisecond)
		st.CancelWrite(1) // DOQ_INTERNAL_ERROR
		return
	case "half":
		st.Write(frame[:len(frame)/2])
		time.Sleep(50 * time.Millisecond)
		c.CloseWithError(1, "half an answer")
		return
	}
	st.Write(frame)
	st.Close()
}

func main() {
	plain := flag.String("plain", "", "UDP and TCP address for plain DNS")
	dot := flag.String("dot", "", "TCP address for DoT")
	doh := flag.String("doh", "", "TCP address for DoH (HTTP/2, any path)")
	doq := flag.String("doq", "", "UDP address for DoQ")
	cert := flag.String("cert", "", "PEM certificate chain (DoT, DoH, DoQ)")
	key := flag.String("key", "", "PEM private key")
	addr := flag.String("addr", "192.0.2.1", "the address in every good answer")
	flag.BoolVar(&logQueries, "log-queries", false, "print each query as \"q TRANSPORT NAME\"")
	flag.Parse()
	answerAddr = net.ParseIP(*addr).To4()

	go func() { // stdout is buffered: flush it often
		for range time.Tick(20 * time.Millisecond) {
			outMu.Lock()
			out.Flush()
			outMu.Unlock()
		}
	}()

	var tlsConf *tls.Config
	if *cert != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatalf("load certificate: %v", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{pair}}
	}
	if *plain != "" {
		pc, err := net.ListenPacket("udp", *plain)
		if err != nil {
			log.Fatalf("udp: %v", err)
		}
		ln, err := net.Listen("tcp", *plain)
		if err != nil {
			log.Fatalf("tcp: %v", err)
		}
		go serveUDP(pc)
		go serveStream(ln, "tcp")
	}
	if *dot != "" {
		conf := tlsConf.Clone()
		conf.NextProtos = []string{"dot"}
		ln, err := tls.Listen("tcp", *dot, conf)
		if err != nil {
			log.Fatalf("dot: %v", err)
		}
		go serveStream(ln, "dot")
	}
	if *doh != "" {
		ln, err := net.Listen("tcp", *doh)
		if err != nil {
			log.Fatalf("doh: %v", err)
		}
		srv := &http.Server{
			Handler:   http.HandlerFunc(dohHandler),
			TLSConfig: tlsConf.Clone(),
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				return context.WithValue(ctx, connKey{}, c)
			},
			ErrorLog: log.New(io.Discard, "", 0),
		}
		srv.TLSConfig.NextProtos = []string{"h2"}
		go srv.ServeTLS(ln, "", "")
	}
	if *doq != "" {
		conf := tlsConf.Clone()
		conf.NextProtos = []string{"doq"}
		conf.MinVersion = tls.VersionTLS13
		ln, err := quic.ListenAddr(*doq, conf, &quic.Config{MaxIncomingStreams: 1000})
		if err != nil {
			log.Fatalf("doq: %v", err)
		}
		go serveDoQ(ln)
	}
	say("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	outMu.Lock()
	out.Flush()
	outMu.Unlock()
}
