#!/usr/bin/python3
"""Writes the seed corpora under tests/fuzz/corpus/<target>/ from the
suite's own bytes: queries and answers built from tests/integration/zones/
test.zone, the frames our transports carry them in, config.example.toml and
the test configs, stamps and lists from the tests. Small on purpose (a few
dozen files per target); the fuzzer grows its own corpus in build/.

Run again after changing it: python3 tests/fuzz/make_corpus.py"""

import random
import shutil
import struct
import sys
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = HERE / "corpus"
ZONE = dns.zone.from_file(str(REPO / "tests/integration/zones/test.zone"), origin="test.",
                          relativize=False)


def query(name, rdtype="A", edns=True, do=False, cookie=False, pad=False, qid=0x1234):
    opts = []
    if cookie:
        opts.append(dns.edns.GenericOption(10, bytes(range(8))))
    if pad:
        opts.append(dns.edns.GenericOption(12, bytes(16)))
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else None, payload=1232,
                               want_dnssec=do, options=opts)
    q.id = qid
    return q


def ordered(rds):
    return sorted(rds, key=lambda rd: rd.to_digestable())


def answer(name, rdtype="A", edns=True, qid=0x1234):
    """The answer knotd gives from the test zone (authoritative data,
    CNAME chains followed, NXDOMAIN/NODATA with the SOA)."""
    q = query(name, rdtype, edns=edns, qid=qid)
    r = dns.message.make_response(q)
    r.flags |= dns.flags.RA
    target = dns.name.from_text(name)
    t = dns.rdatatype.from_text(rdtype)
    for _ in range(8):
        node = ZONE.get_node(target)
        if node is None:
            r.set_rcode(dns.rcode.NXDOMAIN)
            break
        rds = node.get_rdataset(dns.rdataclass.IN, t)
        if rds is not None:
            r.answer.append(dns.rrset.from_rdata_list(target, rds.ttl, ordered(rds)))
            break
        cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None:
            break
        r.answer.append(dns.rrset.from_rdata_list(target, cname.ttl, list(cname)))
        target = cname[0].target
    if not r.answer:
        soa = ZONE.get_rdataset("test.", "SOA")
        r.authority.append(dns.rrset.from_rdata_list(dns.name.from_text("test."), 60,
                                                     list(soa)))
    return r


ANSWERS = [("www.test.", "A"), ("www.test.", "AAAA"), ("multi.test.", "A"),
           ("c1.test.", "A"), ("test.", "MX"), ("nodata.test.", "A"),
           ("missing.test.", "A"), ("mid.test.", "TXT"), ("ttl0.test.", "A")]


def answers(qid=0x1234):
    return [answer(n, t, qid=qid).to_wire() for n, t in ANSWERS]


def queries():
    return [query("www.test.").to_wire(),
            query("www.test.", "AAAA", do=True, cookie=True, pad=True).to_wire(),
            query("Mixed.CASE.test.", "TXT", edns=False).to_wire(),
            query("c1.test.", "A", cookie=True).to_wire()]


def frame(msg):
    return struct.pack("!H", len(msg)) + msg


def h2frame(ftype, flags, sid, payload):
    return struct.pack("!I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack("!I", sid) + payload


CTYPE = b"application/dns-message"
OK_HEADERS = b"\x88\x5f" + bytes([len(CTYPE)]) + CTYPE  # :status 200, content-type


def doh_streams():
    """The server side of DoH exchanges (after its preface) for the harness's
    requests 1, 3 and 5: answers, split bodies, a 404, a reset, GOAWAY."""
    a = answer("www.test.", qid=0).to_wire()
    b = answer("multi.test.", qid=0).to_wire()
    ok1 = h2frame(1, 4, 1, OK_HEADERS) + h2frame(0, 1, 1, a)
    split3 = h2frame(1, 4, 3, OK_HEADERS) + h2frame(0, 0, 3, b[:9]) + h2frame(0, 1, 3, b[9:])
    return [
        ok1,
        ok1 + split3 + h2frame(1, 4, 5, OK_HEADERS) + h2frame(0, 1, 5, a),
        h2frame(1, 5, 1, b"\x8d"),                                   # 404
        h2frame(3, 0, 1, struct.pack("!I", 2)) + split3,             # RST_STREAM
        h2frame(7, 0, 0, struct.pack("!II", 1, 0)) + ok1,            # GOAWAY
        h2frame(4, 0, 0, struct.pack("!HI", 3, 10)) + h2frame(6, 0, 0, bytes(8)) + ok1,
    ]


def odoh_inputs():
    """First byte picks the parser (fuzz_odoh.c): configs, message,
    plaintext, response, query."""
    pk = bytes(range(32))
    contents = struct.pack("!HHHH", 0x0020, 0x0001, 0x0001, len(pk)) + pk
    config = struct.pack("!HH", 0x0001, len(contents)) + contents
    configs = struct.pack("!H", len(config)) + config
    dnsq = query("www.test.", qid=0).to_wire()
    plain = struct.pack("!H", len(dnsq)) + dnsq + struct.pack("!H", 8) + bytes(8)
    key_id = bytes(32)
    msg_q = b"\x01" + struct.pack("!H", len(key_id)) + key_id + \
        struct.pack("!H", 32 + 16) + bytes(range(48))
    msg_r = b"\x02" + struct.pack("!H", 16) + bytes(16) + struct.pack("!H", 40) + bytes(40)
    return [b"\x00" + configs, b"\x01" + msg_q, b"\x01" + msg_r, b"\x02" + plain,
            b"\x03" + msg_r, b"\x04" + msg_q]


def toml_files():
    files = [REPO / "config.example.toml"]
    files += sorted((REPO / "tests/unit").glob("*.toml"))
    out = [f.read_bytes() for f in files if f.exists()]
    out.append(b'[upstreams.a]\nurl = "tls://127.0.0.1:853"\npins = ["x", \'y\']\n'
               b'[groups.default]\nupstreams = ["a"]\nweights = { a = 1 }\n'
               b'[[rules]]\ndomains = ["example.com"]\nqtypes = ["AAAA"]\ngroup = "default"\n')
    out.append(b'x = """multi\nline""" # c\ny = 0x1F\nz = 1_000\nt = true\n'
               b"s = 'lit'\nf = 1.5e3\nd = 1979-05-27T07:32:00Z\n")
    return out


# from the stamp tests (tests/unit/test_config.c, tests/integration)
STAMPS = [
    b"AgcAAAAAAAAABzEuMC4wLjEAEmRucy5jbG91ZGZsYXJlLmNvbQovZG5zLXF1ZXJ5",
    b"AwcAAAAAAAAACzEuMS4xLjE6ODUzj6qqqqqqqqqqqqqqqqqqqhC7u7u7u7u7u7u7u7u7u7u7FmNsb3VkZmxhcmUt"
    b"ZG5zLmNvbTo4NTMA",
    b"AQAAAAAAAAAADjIwOC42Ny4yMjAuMjIwILc1EUAgbyJdPivYItf9aR6hwzzI1maNDL4Ev6vKQ_t5GzIuZG5zY3J5"
    b"cHQtY2VydC5vcGVuZG5zLmNvbQ",
    b"AAAAAAAAAAAACTEyNy4wLjAuOQ",
    b"AgMAAAAAAAAAAAAWWzI2MDY6NDcwMDo0NzAwOjoxMTEzXQovZG5zLXF1ZXJ5",
]


def seeds():
    msgs = queries() + answers()
    a0 = answers(qid=0)
    return {
        "fuzz_dns": msgs,
        "fuzz_cache": answers(),
        "fuzz_frame": [bytes([7]) + frame(queries()[0]) + frame(answers()[0]),
                       bytes([200]) + b"".join(frame(m) for m in answers()),
                       bytes([3]) + frame(answers()[1])[:20],
                       bytes([1]) + frame(b"")],
        "fuzz_doq": [bytes([s]) + frame(a) for s, a in zip((5, 77, 130, 255), a0)] +
                    [bytes([9]) + frame(a0[0]) + b"\x00", bytes([11]) + frame(a0[2])[:30]],
        "fuzz_doh": [b"\x01" + s for s in doh_streams()] +
                    [b"\x00" + h2frame(4, 0, 0, b"") + doh_streams()[0]],
        # an odd first byte: the rest is the payload after "sdns://"
        "fuzz_stamp": [b"\x01" + s for s in STAMPS],
        "fuzz_toml": toml_files(),
        "fuzz_domainset": [b"\x07example\x03com\x00\nexample.com\n*.ads.example\n# c\n",
                           b"0.0.0.0 ads.example tracker.example\n127.0.0.1 localhost\n"
                           b"||adblock^$third-party\n",
                           b"\x03www\x04test\x00 www.test\nsub.www.test\n"],
        "fuzz_hosts": [b"\x03www\x04test\x00 \n192.0.2.1 www.test alias.test\n"
                       b"2001:db8::1 www.test\n# comment\n",
                       b"\x011\x011\x01\x30\x03127\x07in-addr\x04arpa\x00\n127.0.0.1 localhost\n"
                       b"::1 localhost ip6-localhost\n"],
        "fuzz_odoh": odoh_inputs(),
    }


def main():
    random.seed(0)  # the same bytes every run: dnspython shuffles RRsets on output
    targets = {p.stem for p in HERE.glob("fuzz_*.c")}
    all_seeds = seeds()
    missing = targets - set(all_seeds)
    if missing:
        sys.exit("make_corpus.py: no seeds for %s" % ", ".join(sorted(missing)))
    if OUT.exists():
        shutil.rmtree(OUT)
    for target, items in sorted(all_seeds.items()):
        d = OUT / target
        d.mkdir(parents=True)
        for i, data in enumerate(items):
            (d / ("seed-%02d" % i)).write_bytes(data)
        print("%s: %d seeds, %d bytes" % (target, len(items), sum(len(x) for x in items)))


if __name__ == "__main__":
    main()
