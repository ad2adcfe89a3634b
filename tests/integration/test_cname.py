"""A fixed answer that is a CNAME (answer = "target.") is chased: the reply
carries the CNAME (its own answer_ttl) and then the target's records as the
normal path finds them (rules, cache, upstream), with the target's TTLs and
rcode, so a stub resolver that does not follow CNAMEs (glibc) gets its
addresses. Asked with kdig and dig; knotd is the upstream, behind a relay
that counts what leaves the host."""

import json
import socket
import time

import helpers

RULES = """
[[rules]]
domains = ["alias.test"]
answer = "www.test."
answer_ttl = 77
[[rules]]
domains = ["chain.test"]
answer = "c1.test."
[[rules]]
domains = ["gone.test"]
answer = "nothere.test."
[[rules]]
domains = ["local-alias.test"]
answer = "fixed.test."
answer_ttl = 33
[[rules]]
domains = ["fixed.test"]
answer = ["192.0.2.77", "2001:db8::77"]
answer_ttl = 44
[[rules]]
domains = ["to-alias.test"]
answer = "alias.test."
[[rules]]
domains = ["loop-a.test"]
answer = "loop-b.test."
[[rules]]
domains = ["loop-b.test"]
answer = "loop-a.test."
"""


def start(dnsveil, cfgdir, relay, extra=""):
    cfg = cfgdir / "cname.toml"
    cfg.write_text(RULES + extra)
    return dnsveil("udp://127.0.0.1:%d" % relay.port, extra=["-c", str(cfg)], timeout=2000)


def section(r, name="ANSWER"):
    """The records of a section of dig/kdig output as (name, type, rdata,
    ttl), in the order they came."""
    out, cur = [], None
    for line in r.raw.splitlines():
        s = line.strip()
        if s.startswith(";;") and s.endswith("SECTION:"):
            cur = s[2:-len("SECTION:")].strip().upper()
        elif not s:
            cur = None
        elif cur == name and not s.startswith(";"):
            n, ttl, _, t, text = s.split(None, 4)
            out.append((n.lower(), t, " ".join(text.split()), int(ttl)))
    return out


def rrs(r, name="ANSWER"):
    """(name, type, rdata) of a section, in order."""
    return [x[:3] for x in section(r, name)]


def ttls(r, name="ANSWER"):
    return [x[3] for x in section(r, name)]


def kdig(d, name, rdtype, tcp=False):
    return helpers.run_kdig(d.host, d.port, name, rdtype, tcp=tcp)


def at_knot(knot, name, rdtype, tcp=False):
    return helpers.run_kdig("127.0.0.1", knot.port, name, rdtype, tcp=tcp)


def test_cname_to_upstream_name_carries_the_targets_records(relay_factory, dnsveil, cfgdir,
                                                            knot):
    relay = relay_factory()
    d = start(dnsveil, cfgdir, relay)
    for t in ("A", "AAAA"):
        want = at_knot(knot, "www.test.", t)
        assert want.rcode == "NOERROR" and want.answer, want
        r = kdig(d, "alias.test.", t)
        assert r.rcode == "NOERROR", r.raw
        got = rrs(r)
        assert got[0] == ("alias.test.", "CNAME", "www.test."), r.raw
        assert got[1:] == rrs(want), (got, rrs(want))
        # the CNAME's own TTL, then the target's (300 at knotd; a second
        # may have passed in the cache)
        assert ttls(r)[0] == 77, r.raw
        assert ttls(want) == [300] and ttls(r)[1] in (299, 300), r.raw
    assert relay.count("www.test.", "A") == 1 and relay.count("www.test.", "AAAA") == 1
    # the target's answer is cached like any other: asked again, not sent again
    assert rrs(kdig(d, "ALIAS.test.", "A"))[1:] == rrs(at_knot(knot, "www.test.", "A"))
    assert relay.count("www.test.", "A") == 1
    # dig too, over TCP
    r = helpers.run_dig(d.host, d.port, "alias.test.", "AAAA", tcp=True)
    assert rrs(r) == [("alias.test.", "CNAME", "www.test."),
                             ("www.test.", "AAAA", "2001:db8::1")], r.raw
    # asked for the CNAME itself: just the CNAME
    r = kdig(d, "alias.test.", "CNAME")
    assert rrs(r) == [("alias.test.", "CNAME", "www.test.")], r.raw


def test_cname_to_an_upstream_chain_and_to_nxdomain(relay_factory, dnsveil, cfgdir, knot):
    relay = relay_factory()
    d = start(dnsveil, cfgdir, relay)
    want = at_knot(knot, "c1.test.", "A")
    r = kdig(d, "chain.test.", "A")
    assert r.rcode == "NOERROR", r.raw
    assert rrs(r) == [("chain.test.", "CNAME", "c1.test.")] + rrs(want), r.raw
    assert rrs(r)[-1] == ("target.test.", "A", "192.0.2.30"), r.raw

    # the target does not exist: NXDOMAIN, the CNAME, and the zone's SOA
    want = at_knot(knot, "nothere.test.", "A")
    assert want.rcode == "NXDOMAIN"
    r = kdig(d, "gone.test.", "A")
    assert r.rcode == "NXDOMAIN", r.raw
    assert rrs(r) == [("gone.test.", "CNAME", "nothere.test.")], r.raw
    assert [x[:2] for x in rrs(r, "AUTHORITY")] == [("test.", "SOA")], r.raw
    assert rrs(r, "AUTHORITY") == rrs(want, "AUTHORITY"), r.raw


def test_cname_to_a_name_another_rule_answers(relay_factory, dnsveil, cfgdir):
    relay = relay_factory()
    d = start(dnsveil, cfgdir, relay)
    r = kdig(d, "local-alias.test.", "A")
    assert r.rcode == "NOERROR", r.raw
    assert rrs(r) == [("local-alias.test.", "CNAME", "fixed.test."),
                             ("fixed.test.", "A", "192.0.2.77")], r.raw
    assert ttls(r) == [33, 44], r.raw
    r = kdig(d, "local-alias.test.", "AAAA", tcp=True)
    assert rrs(r) == [("local-alias.test.", "CNAME", "fixed.test."),
                             ("fixed.test.", "AAAA", "2001:db8::77")], r.raw
    # CNAME to a CNAME rule to an upstream name
    r = kdig(d, "to-alias.test.", "A")
    assert rrs(r) == [("to-alias.test.", "CNAME", "alias.test."),
                             ("alias.test.", "CNAME", "www.test."),
                             ("www.test.", "A", "192.0.2.1")], r.raw
    with relay.lock:
        asked = {n for n, _ in relay.counts}
    assert asked <= {"ready.test.", "www.test."}, asked  # fixed.test. never left


def test_cname_loop_is_servfail_at_once(relay_factory, dnsveil, cfgdir):
    relay = relay_factory()
    d = start(dnsveil, cfgdir, relay)
    for tcp in (False, True):
        t = time.monotonic()
        r = kdig(d, "loop-a.test.", "A", tcp=tcp)
        assert r.rcode == "SERVFAIL" and not r.answer, r.raw
        assert time.monotonic() - t < 1.5  # no hang, no wait for a deadline
    # the daemon is fine afterwards
    assert kdig(d, "alias.test.", "A").rcode == "NOERROR"
    with relay.lock:
        asked = {n for n, _ in relay.counts}
    assert not any(n.startswith("loop") for n in asked), asked


def test_cname_target_size_and_dead_upstream(relay_factory, dnsveil, cfgdir, knot):
    """The joined answer is sized for the client that asked: truncated over
    UDP, whole over TCP. A target the upstream never answers: SERVFAIL by
    the deadline, not a hang."""
    relay = relay_factory()
    d = start(dnsveil, cfgdir, relay, '[[rules]]\ndomains = ["big-alias.test"]\n'
                                      'answer = "mid.test."\n')
    r = helpers.run_dig(d.host, d.port, "big-alias.test.", "TXT", opts=["+noedns"])
    assert "tc" in r.flags, r.raw
    r = kdig(d, "big-alias.test.", "TXT", tcp=True)
    want = at_knot(knot, "mid.test.", "TXT", tcp=True)
    assert r.rcode == "NOERROR" and len(want.answer) == 1, want.raw
    assert rrs(r)[0] == ("big-alias.test.", "CNAME", "mid.test.")
    assert sorted(rrs(r)[1:]) == sorted(rrs(want)), r.raw

    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hole.bind(("127.0.0.1", 0))
    try:
        cfg = cfgdir / "dead.toml"
        cfg.write_text(RULES)
        d2 = dnsveil("udp://127.0.0.1:%d" % hole.getsockname()[1], extra=["-c", str(cfg)],
                     timeout=1000)
        t = time.monotonic()
        r = kdig(d2, "alias.test.", "A")
        assert r.rcode == "SERVFAIL" and not r.answer, r.raw
        assert time.monotonic() - t < 2.5
        # a local target needs no upstream
        r = kdig(d2, "local-alias.test.", "A")
        assert r.rcode == "NOERROR" and rrs(r)[1] == ("fixed.test.", "A", "192.0.2.77"), r.raw
    finally:
        hole.close()


def test_cname_query_log(relay_factory, dnsveil, cfgdir):
    """The query log: the client's query as a local answer by the CNAME rule
    with the final rcode, and the target's lookup as its own line."""
    relay = relay_factory()
    log = cfgdir / "q.log"
    d = start(dnsveil, cfgdir, relay, '[querylog]\nfile = "%s"\n' % log)
    kdig(d, "alias.test.", "A")
    kdig(d, "gone.test.", "AAAA")
    end = time.monotonic() + 5
    lines = []
    while time.monotonic() < end:
        lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
        if len(lines) >= 5:
            break
        time.sleep(0.05)
    by = {(x["name"], x["type"]): x for x in lines}
    a = by[("alias.test.", "A")]
    assert a["source"] == "local" and a["rcode"] == "NOERROR" and a["rule"] == 2, a
    assert "group" not in a, a
    w = by[("www.test.", "A")]
    assert w["source"] == "upstream" and w["client"] == a["client"], w
    g = by[("gone.test.", "AAAA")]
    assert g["source"] == "local" and g["rcode"] == "NXDOMAIN", g
