#!/usr/bin/env bash
# First-query latency over a 20 ms RTT path, cold and resumed, for the three
# encrypted transports:
#   doq   quic://  (cold: 1-RTT handshake; resumed: 0-RTT early data)
#   dot   tls://   (cold: TCP + TLS 1.3; resumed: TCP + TLS session ticket)
#   doh   https:// (as dot, plus HTTP/2 set-up)
# Two network namespaces joined by a veth pair with netem delaying each
# direction by 10 ms (or, on kernels without netem, a TUN pair and a small
# userspace link that delays each packet by 10 ms). The server side runs knotd (tests/integration/zones),
# unbound with DoT and DoH in front of it, and the Go DoQ peer
# (tests/peers/doq) in front of the same knotd; the client side runs one
# dnsveil per transport. Every measured query asks a name nobody has asked,
# so nothing comes from a cache; the client -> dnsveil leg is loopback.
#   cold     the first query of a freshly started dnsveil
#   warm     the next query, on the open connection (one round trip)
#   resumed  the first query after both sides closed the idle connection
# A measurement, not a test: it prints figures (median of BENCH_ROUNDS).
#
# Expect dot one RTT above doh: unbound sets TCP_NODELAY on its https-port
# listener but not on its tls-port one, so on DoT its answer waits (Nagle)
# until we ACK the session ticket it sent just before; dnsveil ACKs at once
# (TCP_QUICKACK), without which the wait was a ~40 ms delayed ACK on top.
#
# Usage: sudo bench/doq_latency.sh  (DNSVEIL_BIN=build/release/dnsveil,
#                                     BENCH_ROUNDS=5)
# Needs: root (netns, tc), iproute2, knot, unbound, openssl, python3-dnspython,
#        the DoQ peer (tests/peers/build.sh: golang-go and Debian's quic-go
#        and miekg-dns packages).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
DNSVEIL=${DNSVEIL_BIN:-$root/build/release/dnsveil}
ROUNDS=${BENCH_ROUNDS:-5}
PEER=$root/build/peers/doq
SRV=dvlat-srv-$$
CLI=dvlat-cli-$$
SRV_IP=10.231.0.2
CLI_IP=10.231.0.1
IDLE_MS=1500   # both servers close idle connections after this

BENCH=doq
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
[ "$(id -u)" -eq 0 ] || bench_die "needs root (network namespaces, netem)"
bench_install iproute2 knot unbound openssl dnsutils python3-dnspython
bench_need ip tc knotd unbound openssl dig /usr/bin/python3
[ -x "$DNSVEIL" ] || bench_die "no dnsveil at $DNSVEIL (set DNSVEIL_BIN)"
[ -x "$PEER" ] || bash tests/peers/build.sh || bench_die "cannot build the DoQ peer"
chmod 755 "$work"   # dnsveil drops to nobody and must read the CA file

# lib.sh's cleanup (processes, work dir), then the namespaces
doq_cleanup() {
    if [ -n "${BENCH_KEEP:-}" ]; then echo "kept $work"; work=/nonexistent; fi
    bench_cleanup
    ip netns del "$SRV" 2>/dev/null || true
    ip netns del "$CLI" 2>/dev/null || true
}
trap doq_cleanup EXIT

# --- the path: two namespaces, 10 ms each way --------------------------------
# netem when the kernel has it; otherwise (some VMs build it out) a small
# userspace link: two TUN devices, one per namespace, and a process that
# carries each IP packet across after the same 10 ms.
ip netns add "$SRV"
ip netns add "$CLI"
for ns in "$CLI" "$SRV"; do ip -n "$ns" link set lo up; done
S() { ip netns exec "$SRV" "$@"; }
C() { ip netns exec "$CLI" "$@"; }
probe=dvl-p$$
ip -n "$CLI" link add "$probe" type veth peer name "$probe-b"
if C tc qdisc add dev "$probe" root netem delay 10ms 2>/dev/null; then
    ip -n "$CLI" link del "$probe"
    LINK="veth + netem"
    ip link add dvl-c$$ type veth peer name dvl-s$$
    ip link set dvl-c$$ netns "$CLI"
    ip link set dvl-s$$ netns "$SRV"
    C tc qdisc add dev dvl-c$$ root netem delay 10ms
    S tc qdisc add dev dvl-s$$ root netem delay 10ms
    ip -n "$CLI" addr add "$CLI_IP/24" dev dvl-c$$
    ip -n "$SRV" addr add "$SRV_IP/24" dev dvl-s$$
else
    ip -n "$CLI" link del "$probe"
    LINK="TUN pair + 10 ms userspace delay each way; no netem in this kernel"
    cat >"$work/link.py" <<'EOF'
# Carries IP packets between two TUN devices, each after DELAY seconds.
import fcntl, heapq, os, select, struct, subprocess, sys, time
DELAY = 0.010
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
def tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd
a_name, a_ns, b_name, b_ns = sys.argv[1:5]
a, b = tun(a_name), tun(b_name)
subprocess.run(["ip", "link", "set", a_name, "netns", a_ns], check=True)
subprocess.run(["ip", "link", "set", b_name, "netns", b_ns], check=True)
print("up", flush=True)
other = {a: b, b: a}
due = []
n = 0
while True:
    timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
    r, _, _ = select.select([a, b], [], [], timeout)
    now = time.monotonic()
    for fd in r:
        pkt = os.read(fd, 65535)
        n += 1
        heapq.heappush(due, (now + DELAY, n, other[fd], pkt))
    while due and due[0][0] <= time.monotonic():
        _, _, fd, pkt = heapq.heappop(due)
        try:
            os.write(fd, pkt)
        except OSError:
            pass  # the other side is not up yet: a lost packet, as on a wire
EOF
    /usr/bin/python3 "$work/link.py" dvl-c$$ "$CLI" dvl-s$$ "$SRV" >"$work/link.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do grep -q up "$work/link.log" 2>/dev/null && break; sleep 0.05; done
    grep -q up "$work/link.log" || bench_die "userspace link did not start: $(cat "$work/link.log")"
    ip -n "$CLI" addr add "$CLI_IP/32" peer "$SRV_IP/32" dev dvl-c$$
    ip -n "$SRV" addr add "$SRV_IP/32" peer "$CLI_IP/32" dev dvl-s$$
fi
ip -n "$CLI" link set dvl-c$$ up
ip -n "$SRV" link set dvl-s$$ up
rtt=$(C ping -c 3 -i 0.2 -q "$SRV_IP" 2>/dev/null | awk -F/ '/rtt|round-trip/ { print $5 }') || true
echo "path: $LINK; ping RTT ${rtt:-?} ms"

# --- certificates ------------------------------------------------------------
bench_ca
bench_cert srv bench.test "$SRV_IP"
chmod 644 "$work"/*.pem "$work"/*.key

# --- servers -------------------------------------------------------------------
BENCH_IN=(ip netns exec "$SRV")  # knotd and its readiness probe in the server namespace
bench_knotd

cat >"$work/unbound.conf" <<EOF
server:
    interface: $SRV_IP@853
    interface: $SRV_IP@443
    tls-port: 853
    https-port: 443
    http-endpoint: "/dns-query"
    tls-service-key: "$work/srv.key"
    tls-service-pem: "$work/srv.pem"
    tcp-idle-timeout: $IDLE_MS
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$work"
    pidfile: "$work/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 1
    do-ip6: no
    do-not-query-localhost: no
    module-config: "iterator"
    qname-minimisation: no
    trust-anchor-signaling: no
    root-key-sentinel: no
    local-zone: "test." nodefault
    access-control: 0.0.0.0/0 allow
    cache-max-negative-ttl: 0
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@$KNOT
remote-control:
    control-enable: no
EOF
S unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 &
pids+=($!)

S "$PEER" -listen "$SRV_IP:8853" -cert "$work/srv.pem" -key "$work/srv.key" \
    -upstream "127.0.0.1:$KNOT" -idle "${IDLE_MS}ms" >"$work/doq.log" 2>&1 &
pids+=($!)
sleep 1

# --- measuring -------------------------------------------------------------------
# ask PORT NAME -> milliseconds for one UDP query through dnsveil on PORT
cat >"$work/ask.py" <<'EOF'
import sys, time
import dns.exception, dns.message, dns.query
q = dns.message.make_query(sys.argv[2], "A", use_edns=0)
t0 = time.monotonic()
try:
    r = dns.query.udp(q, "127.0.0.1", port=int(sys.argv[1]), timeout=5)
except dns.exception.Timeout:
    sys.exit("no answer from dnsveil on port %s for %s" % (sys.argv[1], sys.argv[2]))
ms = (time.monotonic() - t0) * 1000
print("%.1f" % ms if r.rcode() in (0, 3) else "fail")
EOF
ask() { C /usr/bin/python3 "$work/ask.py" "$1" "$2"; }

wait_ready() {   # until dnsveil listens on UDP PORT; asks nothing, so no upstream is touched
    for _ in $(seq 200); do
        [ -n "$(C ss -Hlun "sport = :$1")" ] && return 0
        sleep 0.05
    done
    bench_die "dnsveil on port $1 never listened"
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "?" }'; }

declare -A URL=(
    [doq]="quic://$SRV_IP:8853"
    [dot]="tls://$SRV_IP:853"
    [doh]="https://$SRV_IP:443/dns-query"
)
port=6000
for t in doq dot doh; do
    : >"$work/$t.cold"; : >"$work/$t.warm"; : >"$work/$t.resumed"
    for r in $(seq "$ROUNDS"); do
        port=$((port + 1))
        tag="$t-$r-$$"
        C "$DNSVEIL" -l "127.0.0.1:$port" -u "${URL[$t]}" --tls-ca "$work/ca.pem" \
            --timeout 5000 -v >"$work/dnsveil-$t-$r.log" 2>&1 &
        pid=$!
        pids+=($pid)
        wait_ready "$port"
        ask "$port" "cold-$tag.test." >>"$work/$t.cold"
        ask "$port" "warm-$tag.test." >>"$work/$t.warm"
        # both ends drop the idle connection; the session ticket stays
        sleep $(( (IDLE_MS + 1500) / 1000 ))
        ask "$port" "resumed-$tag.test." >>"$work/$t.resumed"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done

echo
echo "first-query latency through dnsveil, 20 ms RTT ($LINK)," \
     "median of $ROUNDS rounds, ms"
printf '%-6s %10s %10s %10s   %s\n' "" cold warm resumed "resumed mechanism"
for t in doq dot doh; do
    case $t in
        doq) how="0-RTT early data" ;;
        dot) how="TCP + TLS 1.3 ticket" ;;
        doh) how="TCP + TLS 1.3 ticket + h2" ;;
    esac
    printf '%-6s %10s %10s %10s   %s\n' "$t" "$(median <"$work/$t.cold")" \
        "$(median <"$work/$t.warm")" "$(median <"$work/$t.resumed")" "$how"
done
if grep -q "0-RTT accepted" "$work"/dnsveil-doq-*.log; then
    echo "(doq: 0-RTT accepted on $(grep -l '0-RTT accepted' "$work"/dnsveil-doq-*.log | wc -l)" \
         "of $ROUNDS resumed connections)"
else
    echo "(doq: 0-RTT was never accepted; see the logs)"
fi
