// doqpeer is a small DNS-over-QUIC (RFC 9250) server for dnsveil's tests.
// It answers each query by forwarding it to a real DNS server (knotd; UDP,
// then TCP when truncated), and can be told to misbehave in the ways the tests need: force a
// Retry, delay answers, refuse 0-RTT, or close connections with a DoQ error.
//
// Counters go to the -stats file (rewritten whole within 10 ms of a change) and to
// stdout as one "stats: k=v ..." line on SIGUSR1. The 0-RTT counter comes from
// the packets themselves (a connection tracer sees which STREAM frames
// arrived in 0-RTT packets that were decrypted), not from guesses about
// timing.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lucas-clemente/quic-go"
	"github.com/lucas-clemente/quic-go/logging"
	"github.com/miekg/dns"
)

// DoQ error codes, RFC 9250 section 8.4.
const (
	doqNoError          = 0x0
	doqInternalError    = 0x1
	doqProtocolError    = 0x2
	doqRequestCancelled = 0x3
)

type counters struct {
	mu    sync.Mutex
	m     map[string]int64
	dirty bool
}

// add only marks the file stale: rewriting it on every query would make
// the file system the bottleneck of a load test.
func (c *counters) add(name string, n int64) {
	c.mu.Lock()
	c.m[name] += n
	c.dirty = true
	c.mu.Unlock()
}

// flushStats keeps the stats file at most 10 ms behind the counters.
func flushStats() {
	for range time.Tick(10 * time.Millisecond) {
		stats.mu.Lock()
		dirty := stats.dirty
		stats.dirty = false
		stats.mu.Unlock()
		if dirty {
			writeStats()
		}
	}
}

func (c *counters) line() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.m))
	for k := range c.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c.m[k]))
	}
	return "stats: " + strings.Join(parts, " ")
}

var (
	stats     = &counters{m: map[string]int64{}}
	statsPath string
	statsMu   sync.Mutex
)

// writeStats replaces the stats file atomically so a reader never sees half.
func writeStats() {
	if statsPath == "" {
		return
	}
	statsMu.Lock()
	defer statsMu.Unlock()
	tmp := statsPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(stats.line()+"\n"), 0o644); err == nil {
		os.Rename(tmp, statsPath)
	}
}

// connTracer counts the distinct streams that carried data in 0-RTT packets
// this server could decrypt, i.e. early data it accepted.
type connTracer struct {
	logging.NullConnectionTracer
	mu   sync.Mutex
	seen map[logging.StreamID]bool
}

func (t *connTracer) ReceivedPacket(hdr *logging.ExtendedHeader, _ logging.ByteCount, frames []logging.Frame) {
	if logging.PacketTypeFromHeader(&hdr.Header) != logging.PacketType0RTT {
		return
	}
	fresh := 0
	t.mu.Lock()
	for _, f := range frames {
		if sf, ok := f.(*logging.StreamFrame); ok && !t.seen[sf.StreamID] {
			t.seen[sf.StreamID] = true
			fresh++
		}
	}
	t.mu.Unlock()
	if fresh > 0 {
		stats.add("zero_rtt_streams", int64(fresh))
	}
}

func (t *connTracer) DroppedPacket(pt logging.PacketType, _ logging.ByteCount, _ logging.PacketDropReason) {
	if pt == logging.PacketType0RTT {
		stats.add("zero_rtt_dropped", 1)
	}
}

type tracer struct{ logging.NullTracer }

func (tracer) TracerForConnection(context.Context, logging.Perspective, logging.ConnectionID) logging.ConnectionTracer {
	return &connTracer{seen: map[logging.StreamID]bool{}}
}

func (tracer) SentPacket(_ net.Addr, hdr *logging.Header, _ logging.ByteCount, _ []logging.Frame) {
	if logging.PacketTypeFromHeader(hdr) == logging.PacketTypeRetry {
		stats.add("retries", 1)
	}
}

type server struct {
	upstream  string
	delay     time.Duration
	closeCode int64
	resetCode int64
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8853", "UDP address to serve DoQ on")
	cert := flag.String("cert", "", "PEM certificate chain")
	key := flag.String("key", "", "PEM private key")
	upstream := flag.String("upstream", "", "DNS server (host:port) that answers the queries")
	flag.StringVar(&statsPath, "stats", "", "file that holds the current counters")
	no0rtt := flag.Bool("no-0rtt", false, "refuse 0-RTT (tickets still resume the session)")
	retry := flag.Bool("retry", false, "answer every new connection with a Retry first")
	delay := flag.Duration("delay", 0, "wait this long before answering each query")
	closeCode := flag.Int64("close-code", -1, "close the connection with this DoQ error code on its first query")
	resetCode := flag.Int64("reset-code", -1, "reset each query's stream with this DoQ error code instead of answering")
	idle := flag.Duration("idle", 30*time.Second, "idle timeout")
	maxStreams := flag.Int64("max-streams", 100, "concurrent bidirectional streams a client may open")
	ticketSeed := flag.String("ticket-seed", "", "derive the session ticket key from this, so a restarted peer resumes old sessions")
	draft29 := flag.Bool("draft29-only", false, "speak only QUIC draft-29, so a v1 client gets a Version Negotiation packet")
	flag.Parse()
	if *cert == "" || *key == "" || *upstream == "" {
		log.Fatal("need -cert, -key and -upstream")
	}

	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatalf("load certificate: %v", err)
	}
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{pair},
		NextProtos:   []string{"doq"},
		MinVersion:   tls.VersionTLS13,
	}
	if *ticketSeed != "" {
		tlsConf.SessionTicketKey = sha256.Sum256([]byte(*ticketSeed))
	}
	qconf := &quic.Config{
		MaxIdleTimeout:     *idle,
		MaxIncomingStreams: *maxStreams,
		Tracer:             tracer{},
	}
	if *retry {
		qconf.RequireAddressValidation = func(net.Addr) bool { return true }
	}
	if *draft29 {
		qconf.Versions = []quic.VersionNumber{quic.VersionDraft29}
	}

	for _, k := range []string{"connections", "streams", "answers", "cancelled", "zero_rtt_streams", "zero_rtt_conns", "zero_rtt_dropped", "retries", "client_closed"} {
		stats.m[k] = 0
	}
	writeStats()
	go flushStats()

	s := &server{upstream: *upstream, delay: *delay, closeCode: *closeCode, resetCode: *resetCode}
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)

	// 0-RTT needs the early listener; the plain one never accepts early data.
	var accept func(context.Context) (quic.Connection, error)
	if *no0rtt {
		ln, err := quic.ListenAddr(*listen, tlsConf, qconf)
		if err != nil {
			log.Fatalf("listen: %v", err)
		}
		defer ln.Close()
		accept = ln.Accept
		fmt.Printf("ready %s\n", ln.Addr())
	} else {
		ln, err := quic.ListenAddrEarly(*listen, tlsConf, qconf)
		if err != nil {
			log.Fatalf("listen: %v", err)
		}
		defer ln.Close()
		accept = func(ctx context.Context) (quic.Connection, error) { return ln.Accept(ctx) }
		fmt.Printf("ready %s\n", ln.Addr())
	}
	os.Stdout.Sync()

	go func() {
		for {
			c, err := accept(context.Background())
			if err != nil {
				log.Printf("accept: %v", err)
				return
			}
			stats.add("connections", 1)
			go s.serveConn(c)
		}
	}()
	for v := range sig {
		if v == syscall.SIGUSR1 {
			fmt.Println(stats.line())
			os.Stdout.Sync()
			continue
		}
		return
	}
}

func (s *server) serveConn(c quic.Connection) {
	if ec, ok := c.(quic.EarlyConnection); ok {
		go func() {
			select {
			case <-ec.HandshakeComplete().Done():
				if c.ConnectionState().TLS.Used0RTT {
					stats.add("zero_rtt_conns", 1)
				}
			case <-c.Context().Done():
			}
		}()
	}
	for {
		st, err := c.AcceptStream(context.Background())
		if err != nil {
			// the client closed it (CONNECTION_CLOSE with an application code)
			// (before the handshake that arrives as a transport error)
			var ae *quic.ApplicationError
			var te *quic.TransportError
			if (errors.As(err, &ae) && ae.Remote) || (errors.As(err, &te) && te.Remote) {
				stats.add("client_closed", 1)
			}
			return
		}
		stats.add("streams", 1)
		if s.closeCode >= 0 {
			c.CloseWithError(quic.ApplicationErrorCode(s.closeCode), "told to")
			return
		}
		go s.serveStream(c, st)
	}
}

// readQuery reads one length-prefixed message and insists on the FIN right
// after it: RFC 9250 allows exactly one query per stream.
func readQuery(st quic.Stream) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(st, hdr[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(st, msg); err != nil {
		return nil, err
	}
	var extra [1]byte
	if n, err := st.Read(extra[:]); n != 0 || !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the query or no FIN")
	}
	return msg, nil
}

func (s *server) serveStream(c quic.Connection, st quic.Stream) {
	wire, err := readQuery(st)
	if err != nil {
		log.Printf("stream %d: %v", st.StreamID(), err)
		c.CloseWithError(doqProtocolError, "bad query stream")
		return
	}
	q := new(dns.Msg)
	if err := q.Unpack(wire); err != nil || q.Id != 0 {
		log.Printf("stream %d: malformed query or non-zero ID", st.StreamID())
		c.CloseWithError(doqProtocolError, "bad query")
		return
	}
	if s.resetCode >= 0 {
		st.CancelWrite(quic.StreamErrorCode(s.resetCode))
		return
	}
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	if st.Context().Err() != nil {
		// write side already cancelled by the client's STOP_SENDING
		stats.add("cancelled", 1)
		return
	}
	q.Id = dns.Id()
	// UDP first: hundreds of concurrent queries must not queue behind
	// knotd's TCP accept; TCP only for answers that do not fit.
	cl := &dns.Client{Net: "udp", UDPSize: dns.MaxMsgSize, Timeout: 5 * time.Second}
	r, _, err := cl.Exchange(q, s.upstream)
	if err == nil && r.Truncated {
		cl.Net = "tcp"
		r, _, err = cl.Exchange(q, s.upstream)
	}
	if err != nil {
		log.Printf("upstream: %v", err)
		st.CancelWrite(doqInternalError)
		return
	}
	r.Id = 0
	out, err := r.Pack()
	if err != nil {
		st.CancelWrite(doqInternalError)
		return
	}
	buf := make([]byte, 2+len(out))
	binary.BigEndian.PutUint16(buf, uint16(len(out)))
	copy(buf[2:], out)
	if _, err := st.Write(buf); err != nil {
		// the client gave up on this query (RFC 9250 REQUEST_CANCELLED)
		var se *quic.StreamError
		if errors.As(err, &se) && se.ErrorCode == doqRequestCancelled {
			stats.add("cancelled", 1)
		}
		return
	}
	st.Close()
	stats.add("answers", 1)
}
