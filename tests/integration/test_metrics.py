"""The Prometheus endpoint: counters that follow real queries, and a client
that connects and says nothing does not hold up DNS."""

import socket
import time
import urllib.error
import urllib.request

import pytest

import helpers


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=3) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_follow_queries(knot, dnsveil, cfgdir):
    mport = helpers.free_port()
    cfg = cfgdir / "c.toml"
    cfg.write_text('[metrics]\nlisten = "127.0.0.1:%d"\n' % mport)
    d = dnsveil("udp://127.0.0.1:%d" % knot.port, extra=["-c", str(cfg)])
    before = scrape(mport)
    for _ in range(3):
        assert helpers.udp_exchange(helpers.make_query("www.test.").to_wire(), d.host, d.port)
    helpers.udp_exchange(b"\x00", d.host, d.port, timeout=0.3)  # dropped
    after = scrape(mport)
    assert after["dnsveil_queries_total"] - before["dnsveil_queries_total"] == 3
    assert after["dnsveil_cache_hits_total"] - before["dnsveil_cache_hits_total"] == 2
    assert after["dnsveil_dropped_total"] - before["dnsveil_dropped_total"] == 1
    assert after["dnsveil_cache_entries"] >= 1
    up = 'dnsveil_upstream_up{upstream="udp://127.0.0.1:%d"}' % knot.port
    assert after[up] == 1

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen("http://127.0.0.1:%d/other" % mport, timeout=3)
    assert e.value.code == 404


def test_silent_metrics_clients_do_not_block_dns(knot, dnsveil, cfgdir):
    mport = helpers.free_port()
    cfg = cfgdir / "c.toml"
    cfg.write_text('[metrics]\nlisten = "127.0.0.1:%d"\n' % mport)
    d = dnsveil("udp://127.0.0.1:%d" % knot.port, extra=["-c", str(cfg)])
    idle = [socket.create_connection(("127.0.0.1", mport)) for _ in range(20)]
    try:
        t0 = time.monotonic()
        assert helpers.udp_exchange(helpers.make_query("mail.test.").to_wire(), d.host, d.port)
        assert time.monotonic() - t0 < 0.5
    finally:
        for s in idle:
            s.close()
    assert scrape(mport)["dnsveil_queries_total"] >= 1
