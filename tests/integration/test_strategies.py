"""Group strategies that change how many upstreams a query touches: parallel
(race all, first good answer wins) and hedge_after_ms (a second upstream when
the first is slow). Upstreams are counting relays in front of knotd, one of
them slowed down."""

import time

import dns.message

import helpers


def config(slow, fast, group_extra):
    return f"""
[upstreams.slow]
url = "udp://127.0.0.1:{slow.port}"
[upstreams.fast]
url = "udp://127.0.0.1:{fast.port}"
[groups.default]
upstreams = ["slow", "fast"]
allow_plaintext = true
{group_extra}
[cache]
enabled = false
"""


def timed_ask(d, name):
    t0 = time.monotonic()
    wire = helpers.udp_exchange(helpers.make_query(name).to_wire(), d.host, d.port, timeout=3)
    assert wire is not None
    return time.monotonic() - t0, dns.message.from_wire(wire)


def start(dnsveil, cfgdir, text):
    cfg = cfgdir / "c.toml"
    cfg.write_text(text)
    return dnsveil(extra=["-c", str(cfg)], timeout=2500)


def test_parallel_first_answer_wins(relay_factory, dnsveil, cfgdir):
    slow, fast = relay_factory(delay=1.0), relay_factory()
    d = start(dnsveil, cfgdir, config(slow, fast, 'strategy = "parallel"'))
    elapsed, msg = timed_ask(d, "www.test.")
    assert msg.answer and elapsed < 0.5, elapsed
    time.sleep(0.1)
    assert slow.count("www.test.") == 1 and fast.count("www.test.") == 1


def test_hedge_after_slow_first(relay_factory, dnsveil, cfgdir):
    slow, fast = relay_factory(delay=1.0), relay_factory()
    d = start(dnsveil, cfgdir, config(slow, fast, 'strategy = "failover"\nhedge_after_ms = 150'))
    elapsed, msg = timed_ask(d, "mail.test.")
    assert msg.answer
    assert 0.12 <= elapsed < 0.6, elapsed
    assert slow.count("mail.test.") == 1 and fast.count("mail.test.") == 1


def test_failover_without_hedge_waits_for_slot(relay_factory, dnsveil, cfgdir):
    """Without hedging, a silent first upstream gets its share of the deadline
    before the second is asked; its late answer would still be taken."""
    slow, fast = relay_factory(delay=5.0), relay_factory()
    d = start(dnsveil, cfgdir, config(slow, fast, 'strategy = "failover"'))
    elapsed, msg = timed_ask(d, "www.test.")
    assert msg.answer
    # 2500 ms shared by the two upstreams: the second starts at ~1250 ms
    assert 1.15 <= elapsed < 1.7, elapsed
