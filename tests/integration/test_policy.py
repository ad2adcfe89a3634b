"""Special-use names are answered here and never reach an upstream, unless a
rule sends them somewhere or answer_special_names is off."""

import dns.message
import dns.rcode

import helpers


def ask(d, name, rdtype="A"):
    wire = helpers.udp_exchange(helpers.make_query(name, rdtype).to_wire(), d.host, d.port,
                                timeout=3)
    assert wire is not None, name
    return dns.message.from_wire(wire)


def test_special_names_stay_local(relay_factory, dnsveil):
    relay = relay_factory()
    d = dnsveil("udp://127.0.0.1:%d" % relay.port)

    a = ask(d, "localhost.")
    assert a.rcode() == dns.rcode.NOERROR and a.answer[0][0].address == "127.0.0.1"
    aaaa = ask(d, "db.LOCALHOST.", "AAAA")
    assert aaaa.answer[0][0].address == "::1"
    assert str(aaaa.question[0].name) == "db.LOCALHOST."
    assert not ask(d, "localhost.", "MX").answer  # NODATA
    for name, rdtype in [("printer.local.", "A"), ("x.invalid.", "A"),
                         ("facebookcorewwwi.onion.", "A"), ("nas.home.arpa.", "A"),
                         ("4.3.2.10.in-addr.arpa.", "PTR"), ("1.1.168.192.in-addr.arpa.", "PTR"),
                         ("9.9.20.172.in-addr.arpa.", "PTR"), ("1.0.0.127.in-addr.arpa.", "PTR")]:
        assert ask(d, name, rdtype).rcode() == dns.rcode.NXDOMAIN, name
    # names that merely look alike still go out
    assert ask(d, "www.test.").rcode() == dns.rcode.NOERROR
    # knotd refuses names outside its zone: that REFUSED came from upstream
    assert ask(d, "4.3.2.11.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED
    with relay.lock:
        asked = {name for name, _ in relay.counts}
    assert asked == {"ready.test.", "www.test.", "4.3.2.11.in-addr.arpa."}, asked  # ready: the fixture's probe


def test_rules_and_switch_override_special_names(relay_factory, dnsveil, cfgdir):
    relay = relay_factory()
    cfg = cfgdir / "c.toml"
    cfg.write_text(f"""
[upstreams.office]
url = "udp://127.0.0.1:{relay.port}"
[groups.office]
upstreams = ["office"]
[[rules]]
domains = ["10.in-addr.arpa"]
group = "office"
""")
    d = dnsveil("udp://127.0.0.1:9", extra=["-c", str(cfg)], timeout=1500)
    ask(d, "4.3.2.10.in-addr.arpa.", "PTR")
    assert relay.count("4.3.2.10.in-addr.arpa.", "PTR") == 1

    cfg.write_text('[server]\nanswer_special_names = false\n')
    d2 = dnsveil("udp://127.0.0.1:%d" % relay.port, extra=["-c", str(cfg)])
    ask(d2, "printer.local.")
    assert relay.count("printer.local.") == 1
