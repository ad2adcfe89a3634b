// odohpeer is an Oblivious DoH (RFC 9230) target or relay for dnsveil's
// tests, on Debian's circl (HPKE) and Go's net/http (HTTP/2 over TLS).
//
// -mode target: serves its ObliviousDoHConfigs at /.well-known/odohconfigs
// (Cache-Control max-age from -max-age) and opens sealed queries POSTed to
// -path, answering each by forwarding it to a real DNS server (knotd; UDP,
// then TCP when truncated). A fresh key each start unless -seed is given; a
// query sealed to another key gets 401. Plain DoH POSTs (application/
// dns-message) on -path are answered too, for side-by-side benchmarks.
//
// -mode relay: forwards each POST /proxy?targethost=H&targetpath=P to
// https://H/P (RFC 9230 4.1; -resolve maps H to an address, -ca trusts the
// test CA) and hands the answer back. -flip flips one bit of every answer's
// ciphertext, as a hostile relay would.
//
// Counters go to the -stats file as "name value" lines, rewritten on change.
package main

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/kem"
	"github.com/miekg/dns"
	"golang.org/x/crypto/hkdf"
)

const ctype = "application/oblivious-dns-message"

var (
	statsPath string
	statsMu   sync.Mutex
	counts    = map[string]int64{}
)

func count(name string) {
	statsMu.Lock()
	defer statsMu.Unlock()
	counts[name]++
	if statsPath == "" {
		return
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %d\n", k, counts[k])
	}
	tmp := statsPath + ".tmp"
	if os.WriteFile(tmp, []byte(b.String()), 0o644) == nil {
		os.Rename(tmp, statsPath)
	}
}

// ---------------------------------------------------------------- target

var suite = hpke.NewSuite(hpke.KEM_X25519_HKDF_SHA256, hpke.KDF_HKDF_SHA256, hpke.AEAD_AES128GCM)

type target struct {
	sk       kem.PrivateKey
	configs  []byte
	keyID    []byte
	upstream string
	maxAge   int
	stall    bool // never answer a configs fetch
}

func newTarget(seed []byte, upstream string, maxAge int) (*target, error) {
	scheme := hpke.KEM_X25519_HKDF_SHA256.Scheme()
	var pk kem.PublicKey
	var sk kem.PrivateKey
	var err error
	if seed != nil {
		pk, sk = scheme.DeriveKeyPair(seed)
	} else if pk, sk, err = scheme.GenerateKeyPair(); err != nil {
		return nil, err
	}
	pkb, err := pk.MarshalBinary()
	if err != nil {
		return nil, err
	}
	// ObliviousDoHConfigContents, then the config and the list around it
	contents := binary.BigEndian.AppendUint16(nil, uint16(hpke.KEM_X25519_HKDF_SHA256))
	contents = binary.BigEndian.AppendUint16(contents, uint16(hpke.KDF_HKDF_SHA256))
	contents = binary.BigEndian.AppendUint16(contents, uint16(hpke.AEAD_AES128GCM))
	contents = binary.BigEndian.AppendUint16(contents, uint16(len(pkb)))
	contents = append(contents, pkb...)
	config := binary.BigEndian.AppendUint16(nil, 0x0001)
	config = binary.BigEndian.AppendUint16(config, uint16(len(contents)))
	config = append(config, contents...)
	configs := binary.BigEndian.AppendUint16(nil, uint16(len(config)))
	configs = append(configs, config...)
	keyID := make([]byte, 32)
	io.ReadFull(hkdf.Expand(sha256.New, hkdf.Extract(sha256.New, contents, nil), []byte("odoh key id")), keyID)
	return &target{sk: sk, configs: configs, keyID: keyID, upstream: upstream, maxAge: maxAge}, nil
}

// readVec reads a uint16-length-prefixed field.
func readVec(b []byte) (field, rest []byte, err error) {
	if len(b) < 2 || len(b)-2 < int(binary.BigEndian.Uint16(b)) {
		return nil, nil, errors.New("truncated")
	}
	n := int(binary.BigEndian.Uint16(b))
	return b[2 : 2+n], b[2+n:], nil
}

// message splits an ObliviousDoHMessage.
func message(b []byte) (typ byte, keyID, ct []byte, err error) {
	if len(b) < 1 {
		return 0, nil, nil, errors.New("empty")
	}
	typ = b[0]
	if keyID, b, err = readVec(b[1:]); err != nil {
		return
	}
	if ct, b, err = readVec(b); err == nil && len(b) != 0 {
		err = errors.New("trailing bytes")
	}
	return
}

func plaintext(msg []byte, pad int) []byte {
	p := binary.BigEndian.AppendUint16(nil, uint16(len(msg)))
	p = append(p, msg...)
	p = binary.BigEndian.AppendUint16(p, uint16(pad))
	return append(p, make([]byte, pad)...)
}

func (t *target) forward(q []byte) ([]byte, error) {
	m := new(dns.Msg)
	if err := m.Unpack(q); err != nil {
		return nil, err
	}
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, t.upstream)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.Exchange(m, t.upstream)
	}
	if err != nil {
		return nil, err
	}
	r.Id = m.Id
	return r.Pack()
}

func (t *target) serveConfigs(w http.ResponseWriter, r *http.Request) {
	if t.stall {
		count("configs_stalled")
		<-r.Context().Done() // never answer; the connection stays up
		return
	}
	count("configs")
	w.Header().Set("Cache-Control", fmt.Sprintf("max-age=%d", t.maxAge))
	w.Write(t.configs)
}

// serveDoH answers a plain DoH POST (RFC 8484) on the same path, so a
// benchmark can compare DoH and ODoH to one server.
func (t *target) serveDoH(w http.ResponseWriter, body []byte) {
	a, err := t.forward(body)
	if err != nil {
		count("upstream_failed")
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	count("doh_answered")
	w.Header().Set("Content-Type", "application/dns-message")
	w.Write(a)
}

func (t *target) serveQuery(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 65536))
	if r.Method == http.MethodPost && err == nil &&
		r.Header.Get("Content-Type") == "application/dns-message" {
		t.serveDoH(w, body)
		return
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != ctype || err != nil {
		count("bad_request")
		http.Error(w, "POST "+ctype, http.StatusBadRequest)
		return
	}
	typ, keyID, ct, err := message(body)
	if err != nil || typ != 1 || len(ct) < 32 {
		count("bad_request")
		http.Error(w, "not an ODoH query", http.StatusBadRequest)
		return
	}
	if !bytes.Equal(keyID, t.keyID) {
		count("unauthorized")
		http.Error(w, "unknown key", http.StatusUnauthorized)
		return
	}
	rcv, err := suite.NewReceiver(t.sk, []byte("odoh query"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	opener, err := rcv.Setup(ct[:32])
	aad := append([]byte{1}, binary.BigEndian.AppendUint16(nil, uint16(len(keyID)))...)
	aad = append(aad, keyID...)
	var qplain []byte
	if err == nil {
		qplain, err = opener.Open(ct[32:], aad)
	}
	var q []byte
	if err == nil {
		var rest []byte
		if q, rest, err = readVec(qplain); err == nil {
			_, _, err = readVec(rest)
		}
	}
	if err != nil {
		count("bad_request")
		http.Error(w, "cannot open", http.StatusBadRequest)
		return
	}
	a, err := t.forward(q)
	if err != nil {
		count("upstream_failed")
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	// RFC 9230 6.2: keys for the answer from the query's context
	secret := opener.Export([]byte("odoh response"), 16)
	nonce := make([]byte, 16)
	rand.Read(nonce)
	salt := append(append(append([]byte{}, qplain...), 0, 16), nonce...)
	prk := hkdf.Extract(sha256.New, secret, salt)
	key, iv := make([]byte, 16), make([]byte, 12)
	io.ReadFull(hkdf.Expand(sha256.New, prk, []byte("odoh key")), key)
	io.ReadFull(hkdf.Expand(sha256.New, prk, []byte("odoh nonce")), iv)
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	raad := append([]byte{2, 0, 16}, nonce...)
	sealed := gcm.Seal(nil, iv, plaintext(a, (128-(len(a)+4)%128)%128), raad)
	out := append([]byte{2, 0, 16}, nonce...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(sealed)))
	out = append(out, sealed...)
	count("answered")
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", "max-age=0")
	w.Write(out)
}

// ---------------------------------------------------------------- relay

type relay struct {
	client *http.Client
	flip   bool
}

func newRelay(caFile string, resolve map[string]string, flip bool) (*relay, error) {
	pool := x509.NewCertPool()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool.AppendCertsFromPEM(pem)
	}
	dialer := &net.Dialer{Timeout: 3 * time.Second}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if a, ok := resolve[addr]; ok {
				addr = a
			}
			return dialer.DialContext(ctx, network, addr)
		},
	}
	return &relay{client: &http.Client{Transport: tr, Timeout: 5 * time.Second}, flip: flip}, nil
}

func (rl *relay) serve(w http.ResponseWriter, r *http.Request) {
	host, path := r.URL.Query().Get("targethost"), r.URL.Query().Get("targetpath")
	body, err := io.ReadAll(io.LimitReader(r.Body, 65536))
	if r.Method != http.MethodPost || host == "" || !strings.HasPrefix(path, "/") || err != nil ||
		r.Header.Get("Content-Type") != ctype {
		count("bad_request")
		http.Error(w, "POST "+ctype+" with targethost and targetpath", http.StatusBadRequest)
		return
	}
	req, err := http.NewRequest(http.MethodPost, "https://"+host+path, bytes.NewReader(body))
	if err != nil {
		count("bad_request")
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Accept", ctype)
	resp, err := rl.client.Do(req)
	if err != nil {
		count("target_failed")
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 65536))
	if err != nil {
		count("target_failed")
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if rl.flip && resp.StatusCode == 200 && len(answer) > 0 {
		answer[len(answer)-1] ^= 0x01 // the last byte of the AEAD tag
		count("flipped")
	}
	count("forwarded")
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(answer)
}

// ---------------------------------------------------------------- main

func main() {
	mode := flag.String("mode", "target", "target or relay")
	listen := flag.String("listen", "127.0.0.1:8443", "TCP address to serve HTTPS on")
	cert := flag.String("cert", "", "PEM certificate chain")
	key := flag.String("key", "", "PEM private key")
	upstream := flag.String("upstream", "", "target: DNS server (host:port) that answers the queries")
	path := flag.String("path", "/dns-query", "target: path that takes sealed queries")
	maxAge := flag.Int("max-age", 3600, "target: Cache-Control max-age of the configs")
	seedHex := flag.String("seed", "", "target: derive the key from this hex seed instead of a random one")
	stall := flag.Bool("stall-configs", false, "target: never answer a configs fetch")
	caFile := flag.String("ca", "", "relay: PEM CA bundle the target's certificate chains to")
	resolveList := flag.String("resolve", "", "relay: HOST:PORT=IP:PORT[,...] to reach targets at")
	flip := flag.Bool("flip", false, "relay: flip one bit of every answer's ciphertext")
	flag.StringVar(&statsPath, "stats", "", "file that holds the current counters")
	flag.Parse()

	mux := http.NewServeMux()
	switch *mode {
	case "target":
		var seed []byte
		if *seedHex != "" {
			var err error
			if seed, err = hex.DecodeString(*seedHex); err != nil {
				log.Fatalf("seed: %v", err)
			}
		}
		t, err := newTarget(seed, *upstream, *maxAge)
		if err != nil {
			log.Fatal(err)
		}
		t.stall = *stall
		mux.HandleFunc("/.well-known/odohconfigs", t.serveConfigs)
		mux.HandleFunc(*path, t.serveQuery)
		log.Printf("odoh target key_id %x", t.keyID)
	case "relay":
		resolve := map[string]string{}
		for _, kv := range strings.Split(*resolveList, ",") {
			if kv == "" {
				continue
			}
			parts := strings.SplitN(kv, "=", 2)
			if len(parts) != 2 {
				log.Fatalf("resolve: expected HOST:PORT=IP:PORT, got %q", kv)
			}
			resolve[parts[0]] = parts[1]
		}
		rl, err := newRelay(*caFile, resolve, *flip)
		if err != nil {
			log.Fatal(err)
		}
		mux.HandleFunc("/proxy", rl.serve)
	default:
		log.Fatalf("mode: target or relay, not %q", *mode)
	}
	count("started")
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("odoh %s serving https on %s", *mode, ln.Addr())
	log.Fatal(srv.ServeTLS(ln, *cert, *key))
}
