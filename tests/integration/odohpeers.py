"""The ODoH test peers (tests/peers/odoh, Go on Debian's circl and net/http):
an Oblivious target in front of the suite's knotd and relays in front of it,
each on a loopback TCP port with a certificate from tlspeers.PrivateCA.

Debian 12 packages no ODoH server or relay; this one shares no code with
dnsveil (circl's HPKE, Go's TLS and HTTP/2 against wolfSSL and nghttp2).
"""

import re
import shutil
import urllib.request
from pathlib import Path

import helpers

PEER_BIN = helpers.REPO / "build" / "peers" / "odoh"


def peer_binary():
    """The built peer (helpers.go_peer); None when Go is missing."""
    return helpers.go_peer("odoh")


def have_go():
    return PEER_BIN.exists() or shutil.which("go") is not None


class OdohPeer(helpers.Peer):
    """odohpeer -mode target|relay on 127.0.0.1:<free port>/tcp."""

    def __init__(self, name, workdir, cert, key):
        super().__init__(name, workdir)
        self.cert, self.key = cert, key
        self.stats_file = self.workdir / (name + ".stats")
        self.args = None

    def _run(self, args, port=None):
        binary = peer_binary()
        if binary is None:
            raise FileNotFoundError("go is not installed: cannot build the ODoH peer")
        self.port = port or helpers.free_port()
        self.args = args
        cmd = [str(binary), "-listen", "127.0.0.1:%d" % self.port, "-cert", str(self.cert),
               "-key", str(self.key), "-stats", str(self.stats_file)] + args
        if self.stats_file.exists():
            self.stats_file.unlink()
        self.log.write_text("")  # a restart waits for its own line
        return self.spawn_until(cmd, "serving https")

    def start_target(self, upstream_port, max_age=3600, seed=None, port=None, stall=False):
        args = ["-mode", "target", "-upstream", "127.0.0.1:%d" % upstream_port,
                "-max-age", str(max_age)]
        if stall:
            args.append("-stall-configs")
        if seed:
            args += ["-seed", seed]
        return self._run(args, port)

    def start_relay(self, ca, targets, flip=False, port=None):
        """targets: {"host:port": port on 127.0.0.1}."""
        resolve = ",".join("%s=127.0.0.1:%d" % (h, p) for h, p in targets.items())
        args = ["-mode", "relay", "-ca", str(ca), "-resolve", resolve]
        if flip:
            args.append("-flip")
        return self._run(args, port)

    def restart(self):
        """Stops and starts again on the same port with the same options (a
        target without a seed comes back with a new key)."""
        self.stop()
        return self._run(self.args, self.port)

    def key_id(self):
        m = re.search(r"key_id ([0-9a-f]+)", self.log.read_text(errors="replace"))
        return m.group(1) if m else None

    def stats(self):
        try:
            text = self.stats_file.read_text()
        except FileNotFoundError:
            return {}
        return {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", text)}


def metrics(port):
    """The dnsveil_odoh_* counters of a metrics endpoint, by short name."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=3) as r:
        text = r.read().decode()
    return {k: int(v) for k, v in re.findall(r"^dnsveil_odoh_(\w+)_total (\d+)$", text, re.M)}


def odoh_config(path, target, port, relays=(), ca=None, metrics_port=None,
                allow_same_operator=None, name="odoh1", extra=""):
    """A config with one ODoH upstream (target host name bootstrapped to
    127.0.0.1) and its relays ("https://HOST:PORT/proxy#127.0.0.1")."""
    lines = []
    if metrics_port:
        lines += ["[metrics]", 'listen = "127.0.0.1:%d"' % metrics_port, ""]
    lines += ["[upstreams.%s]" % name,
              'url = "odoh://%s:%d/dns-query"' % (target, port),
              'bootstrap = ["127.0.0.1"]']
    if ca:
        lines.append('tls_ca = "%s"' % ca)
    if relays:
        lines.append("relays = [%s]" % ", ".join('"%s"' % r for r in relays))
    if allow_same_operator is not None:
        lines.append("allow_same_operator = %s" % ("true" if allow_same_operator else "false"))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n" + extra)
    return path
