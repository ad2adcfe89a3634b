"""The status page in a real browser: headless Chromium loads / from a
running dnsveil while traffic flows to knotd, its own JavaScript fetches
/status.json and draws the page; the test reads the rendered DOM and
compares it with /metrics (parsed by prometheus_client), and saves
screenshots at desktop and phone width into build/test-logs/."""

import html.parser
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

import helpers

parser = pytest.importorskip("prometheus_client.parser",
                             reason="python3-prometheus-client is not installed")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

LOGS = Path(__file__).resolve().parents[2] / "build" / "test-logs"


def chromium(url, *args, timeout=90):
    """Runs headless Chromium on url with a fresh profile; its stdout."""
    profile = tempfile.mkdtemp(prefix="dv-chromium-")
    try:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--hide-scrollbars",
               "--user-data-dir=" + profile] + list(args) + [url]
        r = subprocess.run(cmd, capture_output=True, timeout=timeout)
        assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
        return r.stdout.decode()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(url, path, width, height):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    chromium(url, "--screenshot=%s" % path, "--window-size=%d,%d" % (width, height),
             "--virtual-time-budget=6000")
    assert path.exists() and path.stat().st_size > 10000, path


class Dom(html.parser.HTMLParser):
    """Elements by id and the upstream rows and top lists, with their text."""

    def __init__(self, text):
        super().__init__()
        self.by_id, self.rows, self.tops = {}, {}, {}
        self.recent = []  # the recent queries' rows, newest first
        self.body = {}
        self.stack = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        node = {"tag": tag, "attrs": a, "text": "", "children": []}
        if self.stack:
            self.stack[-1]["children"].append(node)
        if tag == "body":
            self.body = a
        if "id" in a:
            self.by_id[a["id"]] = node
        if tag == "tr" and "data-upstream" in a:
            self.rows[a["data-upstream"]] = {}
        if tag == "td" and self.rows and any(n["tag"] == "tr" for n in self.stack):
            row = [n for n in self.stack if n["tag"] == "tr"][-1]
            if "data-upstream" in row["attrs"]:
                self.rows[row["attrs"]["data-upstream"]][a.get("class", "")] = node
        if tag == "tr" and "data-name" in a:
            self.recent.append(node)
        if tag == "li" and "data-key" in a:
            ol = [n for n in self.stack if n["tag"] == "ol"][-1]
            self.tops.setdefault(ol["attrs"]["id"], []).append(
                (a["data-key"], int(a["data-count"])))
        if tag not in ("meta", "br", "img", "input", "line", "path"):
            self.stack.append(node)

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for n in self.stack:
            n["text"] += data


def lead_int(text):
    """The count a cell starts with (a breakdown by kind may follow)."""
    return int(re.match(r"[\d,]+", text).group(0).replace(",", ""))


def scrape(mport):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for f in parser.text_string_to_metric_families(text):
        for s in f.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(m, name, **labels):
    return m[(name, frozenset(labels.items()))]


def status_json(mport):
    with urllib.request.urlopen("http://127.0.0.1:%d/status.json" % mport, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture
def daemon(knot, dnsveil, cfgdir):
    def make(privacy):
        mport = helpers.free_port()
        dead = helpers.free_port(("127.%d.%d.1" % (os.getpid() % 250 + 1, privacy + 7),))
        conf = cfgdir / ("p%d.toml" % privacy)
        conf.write_text("""
[upstreams.knot]
url = "udp://127.0.0.1:%d"
[upstreams.backup]
url = "udp://127.%d.%d.1:%d"
[groups.default]
upstreams = ["knot", "backup"]
strategy = "failover"
allow_plaintext = true
[groups.dead]
upstreams = ["backup"]
[[rules]]
domains = ["down.test"]
group = "dead"
[metrics]
listen = "127.0.0.1:%d"
privacy = %d
""" % (knot.port, os.getpid() % 250 + 1, privacy + 7, dead, mport, privacy))
        d = dnsveil(timeout=600, extra=["-c", str(conf)])
        return d, mport
    return make


def ask(d, name, rdtype="A"):
    return dns.query.udp(helpers.make_query(name, rdtype), d.host, port=d.port, timeout=5)


def traffic(d, stop, sent):
    """About 25 queries a second over a few names, some repeated (cache
    hits), until stop is set."""
    names = ["www.test.", "www.test.", "www.test.", "mail.test.", "mail.test.", "multi.test."]
    i = 0
    while not stop.is_set():
        n = names[i % len(names)]
        ask(d, n, "A" if (i // len(names)) % 2 == 0 else "AAAA")
        sent[n] = sent.get(n, 0) + 1
        i += 1
        time.sleep(0.04)


def test_status_page_in_chromium(daemon):
    d, mport = daemon(privacy=0)
    # names with bytes a browser must show as text, never as markup
    evil = "<img src=x onerror=alert(1)>.test."
    assert ask(d, "down.test.").rcode() == dns.rcode.SERVFAIL
    ask(d, evil)
    stop, sent = threading.Event(), {}
    t = threading.Thread(target=traffic, args=(d, stop, sent))
    t.start()
    try:
        time.sleep(9)  # a few history samples with traffic in them
        url = "http://127.0.0.1:%d/" % mport
        # screenshots while queries flow
        screenshot(url, LOGS / "status-1280x800.png", 1280, 800)
        screenshot(url, LOGS / "status-390x844.png", 390, 844)
        # the rest of the phone layout: the upstream cards and top lists
        screenshot(url, LOGS / "status-390x1900.png", 390, 1900)
    finally:
        stop.set()
        t.join()

    # traffic stopped: the page and /metrics must now agree exactly
    dom = Dom(chromium(url, "--dump-dom", "--virtual-time-budget=5000"))
    m = scrape(mport)
    assert int(dom.body.get("data-updates", "0")) >= 1, "the page's script never rendered"
    assert "no data" not in dom.by_id["live"]["text"], dom.by_id["live"]["text"]
    assert int(dom.by_id["queries"]["attrs"]["data-value"]) == metric(m, "dnsveil_queries_total")
    assert int(dom.by_id["hit-ratio"]["attrs"]["data-hits"]) == \
        metric(m, "dnsveil_cache_hits_total")
    ratio = metric(m, "dnsveil_cache_hits_total") / metric(m, "dnsveil_queries_total")
    assert dom.by_id["hit-ratio"]["text"].strip() == "%.1f %%" % (100 * ratio)
    assert dom.by_id["version"]["text"] == [
        dict(k)["version"] for (n, k) in m if n == "dnsveil_build_info"][0]

    # the upstream table
    assert set(dom.rows) == {"knot", "backup"}
    for name in dom.rows:
        row = dom.rows[name]
        lab = {"upstream": name, "transport": "plain"}
        assert int(row["sent"]["text"].replace(",", "")) == \
            metric(m, "dnsveil_upstream_queries_total", **lab)
        answers = sum(v for (n, ls), v in m.items() if n == "dnsveil_upstream_answers_total"
                      and dict(ls)["upstream"] == name)
        assert int(row["answers"]["text"].replace(",", "")) == answers
        fails = sum(v for (n, ls), v in m.items() if n == "dnsveil_upstream_failures_total"
                    and dict(ls)["upstream"] == name)
        assert lead_int(row["failures"]["text"]) == fails
        assert row["transport"]["text"] == "plain"
        healthy = metric(m, "dnsveil_upstream_healthy", **lab)
        assert row["state"]["text"] == ("up" if healthy else "backoff")
    assert float(dom.rows["knot"]["p50"]["text"]) > 0
    assert dom.rows["backup"]["p50"]["text"] == "–"  # never answered
    assert lead_int(dom.rows["backup"]["failures"]["text"]) >= 1
    assert "connection" in dom.rows["backup"]["failures"]["text"]

    # top names: exact counts (fewer distinct names than the table holds)
    names = dict(dom.tops["top-names"])
    for n, c in sent.items():
        assert names[n] == c, (n, names)
    # dnsveil's presentation form: bytes other than letters, digits, - and _
    # as \DDD; the page shows those characters as text
    shown = ".".join("".join(c if c.isalnum() or c in "-_" else "\\%03d" % ord(c) for c in lab)
                     for lab in evil.split(".")[:-1]) + "."
    assert names[shown] == 1
    assert "<img" not in "".join(k["text"] for k in dom.by_id.values() if k["tag"] == "img")
    assert not any(n["tag"] == "img" for n in dom.by_id.values())
    clients = dict(dom.tops["top-clients"])
    assert clients["127.0.0.1"] == metric(m, "dnsveil_queries_total")

    # the history behind the graphs had traffic in it
    hist = status_json(mport)["history"]
    assert any(q and q > 5 for q in hist["qps"]), hist
    assert any(r is not None and 0 < r < 1 for r in hist["cache_hit_ratio"]), hist


@pytest.mark.parametrize("privacy", [1, 2])
def test_privacy_levels_hide_clients_then_names(daemon, privacy):
    d, mport = daemon(privacy=privacy)
    ask(d, "www.test.")
    s = status_json(mport)
    assert "top_clients" not in s
    assert ("top_names" in s) == (privacy == 1)
    if privacy == 1:
        assert {"name": "www.test.", "count": 1} in s["top_names"]
    dom = Dom(chromium("http://127.0.0.1:%d/" % mport, "--dump-dom",
                       "--virtual-time-budget=4000"))
    assert int(dom.body.get("data-updates", "0")) >= 1
    assert "hidden" in dom.by_id["clients-card"]["attrs"]
    assert ("hidden" in dom.by_id["names-card"]["attrs"]) == (privacy == 2)
    assert "127.0.0.1" not in json.dumps(s)


# ---- applications and recent queries -------------------------------------

APP_USERS = ("dvstat-a", "dvstat-b")


@pytest.fixture(scope="module")
def app_users():
    import pwd
    if os.geteuid() != 0:
        pytest.skip("needs root (useradd, runuser)")
    made = []
    for u in APP_USERS:
        try:
            pwd.getpwnam(u)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", u], check=True)
            made.append(u)
    yield sorted(APP_USERS)
    for u in made:
        subprocess.run(["userdel", u], check=False)


def kdig_as(user, d, name):
    cmd = ["runuser", "-u", user, "--", "kdig", "@" + d.host, "-p", str(d.port), name, "A",
           "+time=3", "+retry=0", "+notcp"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert "status: NOERROR" in out.stdout or "status: NXDOMAIN" in out.stdout, (cmd, out)


@pytest.fixture
def app_daemon(knot, dnsveil, cfgdir, app_users):
    """Rules that look every sender up (a program rule first, then a user
    rule) and the query log on."""
    def make(privacy):
        mport = helpers.free_port()
        logdir = cfgdir / ("log%d" % privacy)
        logdir.mkdir()
        os.chmod(logdir, 0o777)  # reopened as 'nobody'
        conf = cfgdir / ("a%d.toml" % privacy)
        conf.write_text("""
[upstreams.knot]
url = "udp://127.0.0.1:%d"
[groups.default]
upstreams = ["knot"]
allow_plaintext = true
[groups.other]
upstreams = ["knot"]
[[rules]]
applications = ["no-such-program-dv"]
action = "refuse"
[[rules]]
users = ["%s"]
group = "other"
[querylog]
file = "%s"
[metrics]
listen = "127.0.0.1:%d"
privacy = %d
""" % (knot.port, app_users[0], logdir / "q.log", mport, privacy))
        d = dnsveil(extra=["-c", str(conf)])
        return d, mport
    return make


def shown(name):
    """dnsveil's presentation form of a name: bytes other than letters,
    digits, - and _ as \\DDD."""
    return ".".join("".join(c if c.isalnum() or c in "-_" else "\\%03d" % ord(c) for c in lab)
                    for lab in name.split(".")[:-1]) + "."


def test_top_applications_and_recent_queries_in_chromium(app_daemon, app_users):
    d, mport = app_daemon(privacy=0)
    sent = []  # (name, user or None) in order
    for i in range(3):
        sent.append(("www.test.", app_users[0]))
        kdig_as(app_users[0], d, "www.test.")
    for i in range(5):
        n = "b%d.mail.test." % i
        sent.append((n, app_users[1]))
        kdig_as(app_users[1], d, n)
    evil = "<img src=x onerror=alert(1)>&\"x.test."
    for n in ("multi.test.", evil, "target.test.", "nothere.test."):
        ask(d, n)
        sent.append((n, "root"))
    url = "http://127.0.0.1:%d/" % mport
    screenshot(url, LOGS / "status-apps-1280x800.png", 1280, 800)
    screenshot(url, LOGS / "status-apps-390x844.png", 390, 844)
    # the whole page, down to the recent queries
    screenshot(url, LOGS / "status-apps-1280x1500.png", 1280, 1500)
    screenshot(url, LOGS / "status-apps-390x2600.png", 390, 2600)

    dom = Dom(chromium(url, "--dump-dom", "--virtual-time-budget=5000"))
    m = scrape(mport)
    assert int(dom.body.get("data-updates", "0")) >= 1, "the page's script never rendered"
    # top applications: exact counts per user and program, equal to /metrics
    apps = dict(dom.tops["top-apps"])
    for u, n in zip(app_users, (3, 5)):
        uid = str(__import__("pwd").getpwnam(u).pw_uid)
        assert apps["%s \u00b7 kdig" % u] == n, apps
        assert metric(m, "dnsveil_app_queries_total", uid=uid, user=u, comm="kdig",
                      cgroup="") == n
    assert "hidden" not in dom.by_id["apps-card"]["attrs"]
    # recent queries: the newest first, exactly what was sent, names as text
    rows = [r["attrs"] for r in dom.recent]
    assert "hidden" not in dom.by_id["recent-card"]["attrs"]
    want = list(reversed(sent))
    assert [r["data-name"] for r in rows[:len(want)]] == [shown(n) for n, _ in want], rows
    for r, (n, user) in zip(rows, want):
        assert r["data-client"] == "127.0.0.1"
        assert r["data-user"] == user
        assert r["data-type"] == "A"
    assert rows[0]["data-rcode"] == "NXDOMAIN" and rows[1]["data-rcode"] == "NOERROR"
    qname = [n for n in dom.recent[2]["children"] if "qname" in n["attrs"].get("class", "")]
    assert qname and qname[0]["text"] == shown(evil)
    assert not any(n["tag"] == "img" for n in dom.by_id.values())
    assert len(rows) <= 50


@pytest.mark.parametrize("privacy", [1, 2])
def test_recent_queries_and_applications_by_privacy(app_daemon, app_users, privacy):
    d, mport = app_daemon(privacy=privacy)
    kdig_as(app_users[0], d, "www.test.")
    ask(d, "mail.test.")
    s = status_json(mport)
    dom = Dom(chromium("http://127.0.0.1:%d/" % mport, "--dump-dom",
                       "--virtual-time-budget=4000"))
    assert int(dom.body.get("data-updates", "0")) >= 1
    assert "127.0.0.1" not in json.dumps(s)
    if privacy == 1:
        assert [r["attrs"]["data-name"] for r in dom.recent[:2]] == ["mail.test.", "www.test."]
        assert not any("data-client" in r["attrs"] for r in dom.recent)
        assert dict(dom.tops["top-apps"])["%s \u00b7 kdig" % app_users[0]] == 1
    else:
        assert "recent" not in s and "top_apps" not in s and s["apps"]["found"] >= 2
        assert not dom.recent and "top-apps" not in dom.tops
        assert "hidden" in dom.by_id["recent-card"]["attrs"]
        assert "hidden" in dom.by_id["apps-card"]["attrs"]
        assert app_users[0] not in json.dumps(s)
