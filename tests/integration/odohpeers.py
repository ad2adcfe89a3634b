"""The ODoH test peers (tests/peers/odoh, Go on Debian's circl and net/http):
an Oblivious target in front of the suite's knotd and relays in front of it,
each on a loopback TCP port with a certificate from tlspeers.PrivateCA.

Debian 12 packages no ODoH server or relay; this one shares no code with
dnsveil (circl's HPKE, Go's TLS and HTTP/2 against wolfSSL and nghttp2).
"""

import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import helpers

PEER_BIN = helpers.REPO / "build" / "peers" / "odoh"
BUILD_SCRIPT = helpers.REPO / "tests" / "peers" / "build.sh"


def peer_binary():
    """The built peer, building it (offline) when missing or older than its
    source. None when Go is missing."""
    src = helpers.REPO / "tests" / "peers" / "odoh" / "main.go"
    if PEER_BIN.exists() and PEER_BIN.stat().st_mtime >= src.stat().st_mtime:
        return PEER_BIN
    if shutil.which("go") is None:
        return None
    r = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0 or not PEER_BIN.exists():
        raise RuntimeError("building the ODoH peer failed:\n" + r.stdout + r.stderr)
    return PEER_BIN


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
        self.log.write_text("")
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir)
        logf.close()
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                break
            if "serving https" in self.log.read_text(errors="replace"):
                return self
            time.sleep(0.05)
        raise RuntimeError("ODoH peer %s did not start (exit=%s):\n%s" % (
            self.name, self.proc.poll(), self.log.read_text(errors="replace")[-3000:]))

    def start_target(self, upstream_port, max_age=3600, seed=None, port=None):
        args = ["-mode", "target", "-upstream", "127.0.0.1:%d" % upstream_port,
                "-max-age", str(max_age)]
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
