"""Tests for banpipe.parsers: sample files with expected output, then focused cases.

Each tests/samples/NAME.txt is a hand-written input (documentation addresses, variants from
docs/formats.md incl. the "source only" ones no real file shows); NAME.json holds the
expected alerts, in order, and the expected errors as [lineno, reason].
"""

# Alert lines are test data and read best unbroken.
# ruff: noqa: E501

from __future__ import annotations

import ipaddress
import json
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banpipe import parsers
from banpipe.address import canonical
from banpipe.parsers import FORMATS, REASONS, AlertParser, ParseError, parse_line
from banpipe.pipe import OPTIONAL_ALERT_KEYS

SAMPLES = Path(__file__).parent / "samples"
NOW = datetime(2026, 11, 28, 12, 0)
KEYS = [
    "v",
    "ts",
    "gid",
    "sid",
    "rev",
    "msg",
    "classification",
    "priority",
    "proto",
    "src",
    "sport",
    "dst",
    "dport",
    "action",
    "refs",
    "format",
]


def split_lines(data: bytes) -> list[str]:
    """Lines as a follower hands them over: split at b"\\n" only, "\\n" kept, decoded."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return [line.decode("utf-8", "surrogateescape") for line in lines]


def run(lines, **kw) -> list:
    kw.setdefault("now", NOW)
    p = AlertParser(**kw)
    out = []
    for n, line in enumerate(lines, 1):
        out += p.feed(line, n)
    out += p.flush()
    assert not p.pending()
    return out


def alerts(out) -> list[dict]:
    return [o for o in out if isinstance(o, dict)]


def errors(out) -> list[ParseError]:
    return [o for o in out if isinstance(o, ParseError)]


def one(line: str, **kw) -> dict:
    out = run([line], **kw)
    assert len(out) == 1 and isinstance(out[0], dict), out
    return out[0]


def err(line: str, **kw) -> ParseError:
    out = run([line], **kw)
    assert len(out) == 1 and isinstance(out[0], ParseError), out
    return out[0]


# -- sample files ------------------------------------------------------------------------


SAMPLE_FILES = sorted(SAMPLES.glob("*.txt"))


def test_samples_exist_for_every_format():
    assert len(SAMPLE_FILES) >= 8
    seen = set()
    for f in SAMPLE_FILES:
        doc = json.loads(f.with_suffix(".json").read_text(encoding="utf-8"))
        seen |= {a["format"] for a in doc["alerts"]}
    assert seen == set(FORMATS)


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=[f.stem for f in SAMPLE_FILES])
def test_sample(sample: Path):
    doc = json.loads(sample.with_suffix(".json").read_text(encoding="utf-8"))
    out = run(split_lines(sample.read_bytes()), now=datetime.fromisoformat(doc["now"]))
    got_alerts = alerts(out)
    for a in got_alerts:
        assert list(a) == KEYS + [k for k in OPTIONAL_ALERT_KEYS if k in a]
    assert got_alerts == doc["alerts"]
    assert [[e.lineno, e.reason] for e in errors(out)] == doc["errors"]
    for e in errors(out):
        assert e.reason.split(":")[0] in REASONS or e.reason.startswith(REASONS)


# -- one-line formats --------------------------------------------------------------------

S2 = (
    "07/07-17:40:59.924910  [**] [1:2925:3] INFO web bug 0x0 gif attempt [**] "
    "[Classification: Misc activity] [Priority: 3] {TCP} 203.0.113.143:80 -> 192.0.2.15:49645"
)
SURI = (
    "11/17/2018-10:46:59.686494  [**] [1:2402000:5001] ET DROP Dshield Block Listed Source "
    "group 1 [**] [Classification: Misc Attack] [Priority: 2] {TCP} 198.51.100.18:52626 -> "
    "10.128.0.7:4425"
)


def test_keys_are_the_pipe_contract():
    from banpipe.pipe import ALERT_KEYS

    assert tuple(KEYS) == ALERT_KEYS


def test_exact_dict_and_key_order():
    a = one(S2 + "\n")
    assert list(a) == KEYS
    assert a == {
        "v": 1,
        "ts": "2026-07-07T17:40:59.924910",
        "gid": 1,
        "sid": 2925,
        "rev": 3,
        "msg": "INFO web bug 0x0 gif attempt",
        "classification": "Misc activity",
        "priority": 3,
        "proto": "TCP",
        "src": "203.0.113.143",
        "sport": 80,
        "dst": "192.0.2.15",
        "dport": 49645,
        "action": None,
        "refs": [],
        "format": "snort2-fast",
    }


@pytest.mark.parametrize("ending", ["", "\n", "\r\n"])
def test_line_endings(ending):
    assert one(SURI + ending)["dport"] == 4425
    assert one(SURI + ending)["ts"] == "2018-11-17T10:46:59.686494"


def test_cached_and_uncached_parse_agree():
    parsers._MIDDLES.clear()
    first = one(S2)
    assert parsers._MIDDLES  # the middle of S2 is cached now
    second = one(S2)
    assert first == second
    # Same middle, other addresses: the cache must not carry addresses over.
    third = one(S2.replace("203.0.113.143:80", "198.51.100.1:8080"))
    assert (third["src"], third["sport"]) == ("198.51.100.1", 8080)
    # Same middle with an invalid address: still an error.
    e = err(S2.replace("203.0.113.143:80", "203.0.113.443:80"))
    assert e.reason.startswith("malformed alert: invalid address")
    # IPv6 with ports: the inline path and the full one read alike (cold, then warm).
    for pair in (
        "2001:db8::0:1:51443 -> 2001:db8::2:22",
        "2001:db8::a:443 -> 2001:db8::1:22",
        "2001:db8::a:51443 -> 2001:db8::1:22",
    ):
        line = S2.replace("203.0.113.143:80 -> 192.0.2.15:49645", pair)
        parsers._MIDDLES.clear()
        assert run([line]) == run([line])


@pytest.mark.parametrize("encoded", [False, True])
def test_ipv4_ports_read_alike_cold_and_in_a_burst(encoded):
    # A burst (feed_text) reads IPv4 ports as text when its regex takes them (0-65535, no
    # leading zero); every other port goes the general way. Each line read cold (its
    # middle not cached) must give what the burst gives.
    ports = ["0", "1", "9", "80", "6553", "9999", "10000", "59999", "60000", "65535"]
    ports += ["65536", "70000", "99999", "00", "080", "00080", "123456", "0x50"]
    ports += ["19999", "59999", "64999", "65499", "65529", "65530", "65539", "65599", "65999"]
    addrs = ["192.0.2.1", "256.0.2.1", "192.0.2.01", "0.0.0.0", "1.2.3", "10.0.0.1.5"]
    pairs = [
        f"198.51.100.7:{p} -> 192.0.2.15:{q}"
        for i, p in enumerate(ports)
        for q in (ports[-i - 1], "22")
    ]
    pairs += [f"{a}:80 -> 192.0.2.15:443" for a in addrs] + [
        f"192.0.2.15:443 -> {a}:80" for a in addrs
    ]
    lines = [S2.replace("203.0.113.143:80 -> 192.0.2.15:49645", pair) for pair in pairs]
    cold = []
    for n, line in enumerate(lines, 1):
        parsers._MIDDLES.clear()
        cold += AlertParser(now=NOW).feed(line, n)
    p = AlertParser(now=NOW, encoded=encoded)
    p.feed(S2, 0)  # the middle is cached now
    burst = p.feed_text("\n".join(lines), 1)
    if encoded:
        burst = [
            d
            for x in burst
            for d in (map(json.loads, x.data.splitlines()) if type(x) is parsers.Encoded else [x])
        ]
    assert len(alerts(cold)) > 20 and len(errors(cold)) > 10
    assert [(x.lineno, x.reason) if isinstance(x, ParseError) else x for x in burst] == [
        (x.lineno, x.reason) if isinstance(x, ParseError) else x for x in cold
    ]


@pytest.mark.parametrize(
    ("proto", "src", "want"),
    [
        # Snort prints ports for TCP/UDP only; IPv6 then has the port glued on.
        ("TCP", "2001:db8:5d00:4::6011:b29b:80", ("2001:db8:5d00:4::6011:b29b", 80)),
        ("UDP", "2001:db8::53:53", ("2001:db8::53", 53)),
        ("PROTO:006", "2001:db8::1:22", ("2001:db8::1", 22)),
        ("PROTO:017", "2001:db8::1:53", ("2001:db8::1", 53)),
        ("6", "2001:db8::1:22", ("2001:db8::1", 22)),
        ("17", "2001:db8::1:53", ("2001:db8::1", 53)),
        ("IPV6-ICMP", "2001:db8::1:22", ("2001:db8::1:22", None)),
        ("PROTO:058", "fe80::1", ("fe80::1", None)),
        ("IPV6-ICMP", "::", ("::", None)),
        ("TCP", "2001:DB8:0:0:0:0:0:1:443", ("2001:db8::1", 443)),
    ],
)
def test_snort_ipv6_port_split(proto, src, want):
    # A 5-digit port is no IPv6 group: the destination reads one way only.
    line = (
        f"04/11-00:36:01.316702  [**] [1:1000009:1] m [**] [Priority: 0] {{{proto}}} "
        f"{src} -> ff02::1{':50000' if want[1] is not None else ''}"
    )
    a = one(line)
    assert (a["src"], a["sport"]) == want
    assert a["proto"] == proto


def test_snort_ipv6_udp_fragment_without_ports():
    # Snort prints no ports for fragments (LogIpAddrs: p->frag_flag), whatever the protocol.
    a = one("04/11-00:36:01.316702  [**] [1:9:1] m [**] [Priority: 0] {UDP} :: -> ff02::1")
    assert (a["src"], a["sport"], a["dst"], a["dport"]) == ("::", None, "ff02::1", None)


def test_suricata_always_has_ports_and_expanded_ipv6_is_compressed():
    a = one(
        "11/21/2025-18:28:52.752254  [**] [1:1:1] ICMP Test Rule [**] [Classification: (null)] "
        "[Priority: 3] {IPv6-ICMP} fe80:0000:0000:0000:8ea3:99ff:fedf:e2be:134 -> "
        "ff02:0000:0000:0000:0000:0000:0000:0001:0"
    )
    assert (a["src"], a["sport"], a["dst"], a["dport"]) == (
        "fe80::8ea3:99ff:fedf:e2be",
        134,
        "ff02::1",
        0,
    )
    assert a["classification"] is None and a["proto"] == "IPv6-ICMP"
    e = err(
        "11/21/2025-18:28:52.752254  [**] [1:1:1] m [**] [Classification: (null)] "
        "[Priority: 3] {ICMP} 192.0.2.1 -> 192.0.2.2"
    )
    assert "invalid address" in e.reason


@pytest.mark.parametrize(
    "addr", ["192.0.2.256", "192.0.2", "192.0.2.1.5", "192.0.02.1", "2001:db8:::1", "g::1"]
)
def test_invalid_addresses_are_errors(addr):
    e = err(
        f"05/30-19:09:10.917356  [**] [1:477:3] ICMP [**] [Priority: 0] {{ICMP}} {addr} -> 192.0.2.1"
    )
    assert e.reason.startswith("malformed alert")
    assert e.lineno == 1


def test_eth_without_addresses_and_one_sided_error():
    a = one('04/26-10:29:16.526790 [**] [116:6:1] "(ipv4) x" [**] [Priority: 3] {eth}  -> ')
    assert a["proto"] == "eth"
    assert [a[k] for k in ("src", "sport", "dst", "dport")] == [None] * 4
    e = err(
        '04/26-10:29:16.526790 [**] [116:6:1] "(ipv4) x" [**] [Priority: 3] {eth} 192.0.2.1 -> '
    )
    assert e.reason.startswith("malformed alert")


# -- time stamps ---------------------------------------------------------------------------


def _ts(stamp: str, now: datetime, **kw) -> str:
    line = f"{stamp}  [**] [1:1:1] m [**] [Priority: 0] {{ICMP}} 192.0.2.1 -> 192.0.2.2"
    return one(line, now=now, **kw)["ts"]


def test_year_inference():
    now = datetime(2026, 1, 1, 0, 30)
    assert _ts("12/31-23:00:00.000000", now) == "2025-12-31T23:00:00.000000"
    assert _ts("01/01-00:10:00.000000", now) == "2026-01-01T00:10:00.000000"
    # up to one day ahead of now stays in the current year, more goes back a year
    assert _ts("01/02-00:30:00.000000", now) == "2026-01-02T00:30:00.000000"
    assert _ts("01/02-00:30:00.000001", now) == "2025-01-02T00:30:00.000001"
    assert _ts("06/15-12:00:00.000000", now) == "2025-06-15T12:00:00.000000"
    assert _ts("06/15-12:00:00.000000", datetime(2026, 7, 1)) == "2026-06-15T12:00:00.000000"


def test_year_override_and_set_now():
    now = datetime(2026, 1, 1)
    assert _ts("06/15-12:00:00.000000", now, year=2019) == "2019-06-15T12:00:00.000000"
    # the override is for yearless stamps only
    line = "06/15/2024-12:00:00.000000  [**] [1:1:1] m [**] [Classification: x] [Priority: 0] "
    assert one(line + "{TCP} 192.0.2.1:1 -> 192.0.2.2:2", year=2019)["ts"].startswith("2024-")
    p = AlertParser(now=now)
    stamp = "06/15-12:00:00.000000  [**] [1:1:1] m [**] [Priority: 0] {ICMP} 192.0.2.1 -> 192.0.2.2"
    assert p.feed(stamp, 1)[0]["ts"].startswith("2025-")
    p.set_now(datetime(2026, 7, 1))
    assert p.feed(stamp, 2)[0]["ts"].startswith("2026-")


@pytest.mark.parametrize("encoded", [False, True])
def test_set_now_moves_the_year_of_a_burst(encoded):
    # A burst (feed_text) keeps its lines' pieces per middle and date token; a new
    # anchor must give the same lines their new year, with ports or without.
    head = "06/15-12:00:00.000000  [**] [1:1:1] m [**] [Priority: 0] "
    text = "\n".join(
        [head + "{TCP} 192.0.2.1:1 -> 192.0.2.2:2", head + "{ICMP} 192.0.2.1 -> 192.0.2.2"] * 2
    )
    p = AlertParser(now=datetime(2026, 1, 1), encoded=encoded)

    def years() -> set[str]:
        out = []
        for x in p.feed_text(text, 1):  # Encoded: the lines of alerts made from pieces
            out += (
                [json.loads(ln) for ln in x.data.splitlines()]
                if type(x) is parsers.Encoded
                else [x]
            )
        assert len(out) == 4 and all(type(a) is dict for a in out), out
        return {a["ts"][:4] for a in out}

    assert years() == {"2025"}
    p.set_now(datetime(2026, 7, 1))
    assert years() == {"2026"}


def test_a_burst_keeps_a_bounded_number_of_line_pieces(monkeypatch):
    # The per-parser pieces (middle x date token) are cleared when full: memory stays
    # bounded whatever the input, and the lines read alike before and after.
    from banpipe.parsers import scan

    monkeypatch.setattr(scan, "_HOT_MAX", 8)
    lines = [
        f"0{1 + i % 9}/15-12:00:00.000000  [**] [1:{i % 17}:1] m [**] [Priority: 0] "
        "{TCP} 192.0.2.1:1 -> 192.0.2.2:2"
        for i in range(200)
    ]
    p = AlertParser(now=NOW, encoded=True)
    out = [json.loads(ln) for x in p.feed_text("\n".join(lines), 1) for ln in _lines_of(x)]
    assert 0 < sum(map(len, p._hot.values())) <= 8
    assert out == [one(line) for line in lines]


def _lines_of(x) -> list:
    return x.data.splitlines() if type(x) is parsers.Encoded else [json.dumps(x)]


def test_leap_day_without_year():
    assert _ts("02/29-10:00:00.000000", datetime(2025, 3, 1)) == "2024-02-29T10:00:00.000000"
    # an older leap year's 29 February: the last leap year (issue 10)
    assert _ts("02/29-10:00:00.000000", datetime(2026, 3, 1)) == "2024-02-29T10:00:00.000000"
    assert _ts("02/29-10:00:00.000000", datetime(2028, 2, 28, 12)) == "2028-02-29T10:00:00.000000"
    assert _ts("02/29-10:00:00.000000", datetime(2103, 1, 1)) == "2096-02-29T10:00:00.000000"
    e = err(
        "02/30-10:00:00.000000  [**] [1:1:1] m [**] [Priority: 0] {ICMP} 192.0.2.1 -> 192.0.2.2",
        now=datetime(2026, 3, 1),
    )
    assert e.reason == "malformed alert: invalid date"


def test_two_digit_year_orders():
    # Snort 2 -y: MM/DD/YY, two spaces, msg not quoted
    a = one(
        "11/08/17-12:24:52.063717  [**] [1:1:1] m [**] [Priority: 0] {ICMP} 192.0.2.1 -> 192.0.2.2"
    )
    assert (a["ts"], a["format"]) == ("2017-11-08T12:24:52.063717", "snort2-fast")
    # Snort 3 -y: YY/MM/DD, one space, msg quoted
    a = one(
        '11/08/17-12:24:52.063717 [**] [1:1:1] "m" [**] [Priority: 0] {ICMP} 192.0.2.1 -> 192.0.2.2'
    )
    assert (a["ts"], a["format"], a["msg"]) == ("2011-08-17T12:24:52.063717", "snort3-fast", "m")
    assert _ts("12/31/99-23:59:59.999999", NOW) == "1999-12-31T23:59:59.999999"


@pytest.mark.parametrize(
    "stamp",
    [
        "13/01-00:00:00.000000",
        "12/28-24:00:00.000000",
        "12/28-23:60:00.000000",
        "12/28-23:00:00.00000",
    ],
)
def test_invalid_stamps(stamp):
    e = err(f"{stamp}  [**] [1:1:1] m [**] [Priority: 0] {{ICMP}} 192.0.2.1 -> 192.0.2.2")
    assert e.reason.startswith("malformed alert")


# -- tags and fields -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "action", "fmt"),
    [
        (
            "08/01-10:00:00.000001  [Drop] [**] [1:2:3] m [**] [Priority: 1] {TCP} 192.0.2.1:1 -> 192.0.2.2:2",
            "drop",
            "snort2-fast",
        ),
        (
            "08/01-10:00:00.000001  [WDrop] [**] [1:2:3] m [**] [Priority: 1] {TCP} 192.0.2.1:1 -> 192.0.2.2:2",
            "wdrop",
            "snort2-fast",
        ),
        (
            "08/01-10:00:00.000001  [CDrop] [**] [1:2:3] m [**] [Priority: 1] {TCP} 192.0.2.1:1 -> 192.0.2.2:2",
            "cdrop",
            "snort2-fast",
        ),
        (
            '08/01-10:00:00.000001 [drop] [**] [1:2:3] "m" [**] [Priority: 1] {TCP} 192.0.2.1:1 -> 192.0.2.2:2',
            "drop",
            "snort3-fast",
        ),
        (
            '08/01-10:00:00.000001 [would_drop] [**] [1:2:3] "m" [**] [Priority: 1] {TCP} 192.0.2.1:1 -> 192.0.2.2:2',
            "would_drop",
            "snort3-fast",
        ),
        (
            "08/01/2025-10:00:00.000001  [Drop] [**] [1:2:3] m [**] [Classification: (null)] [Priority: 1] {TCP} 192.0.2.1:1 -> 192.0.2.2:2",
            "drop",
            "suricata-fast",
        ),
        (
            "08/01/2025-10:00:00.000001  [wDrop] [**] [1:2:3] m [**] [Classification: (null)] [Priority: 1] {TCP} 192.0.2.1:1 -> 192.0.2.2:2",
            "wdrop",
            "suricata-fast",
        ),
        (
            "08/01/2025-10:00:00.000001  [**] [1:2:3] m [**] [Classification: (null)] [Priority: 1] {TCP} 192.0.2.1:1 -> 192.0.2.2:2",
            None,
            "suricata-fast",
        ),
    ],
)
def test_action_tags(line, action, fmt):
    a = one(line)
    assert (a["action"], a["format"], a["msg"]) == (action, fmt, "m")


def test_null_classification_and_msg():
    a = one(
        "08/02/2014-10:50:25.823699  [**] [1:6:1] (null) [**] [Classification: (null)] [Priority: 3] "
        "{TCP} 0000:0000:0000:0000:0000:0000:0000:0001:3000 -> 0000:0000:0000:0000:0000:0000:0000:0001:56508"
    )
    assert (a["msg"], a["classification"], a["src"], a["dport"]) == ("(null)", None, "::1", 56508)


def test_msg_kept_verbatim():
    a = one(
        "07/06-23:10:03.943339  [**] [1:2:1]  1|ET TROJAN x [**] [Priority: 1] {ICMP} 192.0.2.1 -> 192.0.2.2"
    )
    assert a["msg"] == " 1|ET TROJAN x"
    a = one(
        '07/06-23:10:03.943339 [**] [1:2:1] "“quoted” Dấu\tx [DROP] ?*/." [**] [Priority: 1] {IP} 192.0.2.1 -> 192.0.2.2'
    )
    assert a["msg"] == "“quoted” Dấu\tx [DROP] ?*/."
    # Snort 2 keeps ASCII quotes; only Snort 3's outer quotes go
    a = one(
        '07/06-23:10:03.943339  [**] [1:2:1] "q" [**] [Priority: 1] {ICMP} 192.0.2.1 -> 192.0.2.2'
    )
    assert a["msg"] == '"q"'
    a = one(
        "07/06-23:10:03.943339  [**] [1:2:1] a\u00a0b [**] [Priority: 1] {ICMP} 192.0.2.1 -> 192.0.2.2"
    )
    assert a["msg"] == "a\u00a0b"


def test_interface_and_appid_tags():
    a = one(
        "08/01-10:00:01.000000  [**] [1:3:1]  <eth0> LOCAL x [**] [Priority: 3] [AppID: HTTP] {TCP} 192.0.2.1:1 -> 192.0.2.2:80"
    )
    assert (a["msg"], a["priority"], a["dport"]) == ("LOCAL x", 3, 80)


def test_no_ip_header_and_raw_pkt():
    a = one("08/01-10:00:03.000000  [**] [116:150:1] (snort_decoder) WARNING: x [**] ")
    assert (a["priority"], a["proto"], a["src"], a["classification"]) == (None, None, None, None)
    a = one(
        "12/03/1999-06:34:57.474450  [**] [1:2200003:2] SURICATA IPv4 truncated packet [**] "
        "[Classification: Generic Protocol Command Decode] [Priority: 3] [**] [Raw pkt: 00 00 C0 9F ] "
        "[pcap file packet: 49]"
    )
    assert (a["proto"], a["src"], a["dst"], a["priority"]) == (None, None, None, 3)
    e = err("08/01-10:00:03.000000  [**] [1:2:1] m [**] [Priority: 3] [**] [Raw pkt: 00 ]")
    assert e.reason == "malformed alert: Raw pkt outside Suricata"


def test_torn_line_keeps_the_complete_alert():
    out = run(["11/13-18:00:37.96211/13-18:01:55.044396  " + S2[23:]])
    assert isinstance(out[0], ParseError) and out[0].text == "11/13-18:00:37.962"
    assert out[1]["ts"] == "2026-11-13T18:01:55.044396" and out[1]["sid"] == 2925


def test_truncated_first_line_is_not_an_alert():
    out = run(
        [
            " [**] [Classification: A Network Trojan was detected] [Priority: 1] {TCP} 192.0.2.8:5 -> 192.0.2.9:4\n",
            S2,
        ]
    )
    assert [type(o) for o in out] == [ParseError, dict]
    assert out[0].reason == "malformed alert"


# -- syslog --------------------------------------------------------------------------------


def test_syslog_forms():
    lines = [
        "Sep  5 16:05:26 dev snort: [1:1000017:0] UDP Connection [Classification: Misc activity] [Priority: 3] {UDP} 10.150.10.44:55776 -> 10.25.10.22:32414",
        "Sep  5 16:02:55 dev snort[1234]: [1:1000015:0] Pinging... [Priority: 3]: {ICMP} 10.50.10.88 -> 192.0.2.1",
        "Oct 10 16:08:06 64022b9ff9e8 10/10-16:08:05.297269  [**] [1:1000001:1] ICMP Ping detected [**] [Priority: 0] {IPV6-ICMP} :: -> ff02::16",
        "Oct 10 16:08:05 64022b9ff9e8 syslog-ng[8]: syslog-ng starting up; version='4.10.1'",
    ]
    out = run(lines)
    assert out[0]["format"] == "snort-syslog" and out[0]["ts"] == "2026-09-05T16:05:26.000000"
    assert (out[0]["sport"], out[0]["classification"]) == (55776, "Misc activity")
    assert (out[1]["msg"], out[1]["sport"], out[1]["classification"]) == ("Pinging...", None, None)
    assert out[2]["format"] == "snort2-fast" and out[2]["ts"] == "2026-10-10T16:08:05.297269"
    assert out[3] == ParseError(4, "not an alert", lines[3])
    # the syslog stamp's year follows the same rule as Snort's
    jan = one(lines[0].replace("Sep  5", "Dec 31"), now=datetime(2027, 1, 1, 0, 5))
    assert jan["ts"] == "2026-12-31T16:05:26.000000"


# -- full format blocks --------------------------------------------------------------------

BLOCK = [
    "[**] [1:2011716:4] ET SCAN Sipvicious User-Agent Detected (friendly-scanner) [**]\n",
    "[Classification: Attempted Information Leak] [Priority: 2] \n",
    "11/17-10:29:11.303954 198.51.100.215:5396 -> 10.128.0.4:5060\n",
    "UDP TTL:52 TOS:0x0 ID:0 IpLen:20 DgmLen:441 DF\n",
    "Len: 413\n",
    "[Xref => http://doc.emergingthreats.net/2011716][Xref => http://blog.sipvicious.org/]\n",
    "[Xref => http://code.google.com/p/sipvicious/]\n",
    "\n",
]


def test_full_block_emitted_at_blank_line_with_refs():
    p = AlertParser(now=NOW)
    for n, line in enumerate(BLOCK[:-1], 1):
        assert p.feed(line, n) == []
        assert p.pending()
    (a,) = p.feed(BLOCK[-1], len(BLOCK))
    assert not p.pending()
    assert a["refs"] == [
        "http://doc.emergingthreats.net/2011716",
        "http://blog.sipvicious.org/",
        "http://code.google.com/p/sipvicious/",
    ]
    assert (a["format"], a["proto"], a["src"], a["sport"], a["dport"]) == (
        "snort2-full",
        "UDP",
        "198.51.100.215",
        5396,
        5060,
    )
    assert list(a) == KEYS


def test_full_block_crlf_and_flush_without_final_newline():
    lines = [line.replace("\n", "\r\n") for line in BLOCK[:-1]]
    lines[-1] = lines[-1].rstrip("\r\n")
    p = AlertParser(now=NOW)
    for n, line in enumerate(lines, 1):
        assert p.feed(line, n) == []
    (a,) = p.flush()
    assert a["classification"] == "Attempted Information Leak" and len(a["refs"]) == 3
    assert p.flush() == []


def test_header_only_block_then_next_header():
    p = AlertParser(now=NOW)
    assert p.feed('[**] [1:51018:1] "SERVER-OTHER DualDesk" [**]\n', 1) == []
    assert p.feed("06/08-15:00:23.628551 \n", 2) == []
    (a,) = p.feed('[**] [1:43542:2] "SERVER-OTHER CCProxy" [**]\n', 3)
    assert a["format"] == "snort3-full" and a["msg"] == "SERVER-OTHER DualDesk"
    assert [a[k] for k in ("classification", "priority", "proto", "src", "dport")] == [None] * 5
    assert p.pending()
    p.feed("[Classification: Attempted User Privilege Gain] [Priority: 1] \n", 4)
    p.feed("06/08-15:00:23.728286 192.168.1.12:36242 -> 192.168.1.50:23\n", 5)
    p.feed("TCP TTL:64 TOS:0x0 ID:27398 IpLen:20 DgmLen:227 DF\n", 6)
    (b,) = p.flush()
    assert (b["sid"], b["priority"], b["dport"]) == (43542, 1, 23)


def test_original_datagram_dump_is_not_the_alert():
    lines = [
        "[**] [1:2000000:0] ICMP test [**]",
        "[Priority: 0] ",
        "01/29-16:06:24.017716 192.168.187.128 -> 192.168.187.131",
        "ICMP TTL:64 TOS:0xC0 ID:8066 IpLen:20 DgmLen:57",
        "Type:3  Code:3  DESTINATION UNREACHABLE: PORT UNREACHABLE",
        "** ORIGINAL DATAGRAM DUMP:",
        "192.168.187.131:37167 -> 192.168.187.128:1434",
        "UDP TTL:64 TOS:0x0 ID:10488 IpLen:20 DgmLen:29 DF",
        "[Xref => http://inside.dump.example/]",
        "** END OF DUMP",
        "",
    ]
    (a,) = run(lines)
    assert (a["proto"], a["src"], a["sport"], a["dst"], a["dport"]) == (
        "ICMP",
        "192.168.187.128",
        None,
        "192.168.187.131",
        None,
    )
    assert a["refs"] == []


def test_mac_line_addresses_from_next_line():
    lines = [
        "[**] [1:384:5] ICMP PING [**]",
        "[Classification: Misc activity] [Priority: 3] ",
        "10/06-11:19:11.954640 00:0C:29:A5:B7:A2 -> 00:50:56:E1:9B:9D type:0x800 len:0x62",
        "192.168.175.129 -> 198.51.100.110 ICMP TTL:64 TOS:0x0 ID:682 IpLen:20 DgmLen:84 DF",
        "Type:8  Code:0  ID:12   Seq:1  ECHO",
    ]
    (a,) = run(lines)
    assert (a["src"], a["dst"], a["proto"], a["sport"]) == (
        "192.168.175.129",
        "198.51.100.110",
        "ICMP",
        None,
    )
    tcp = lines[:3] + [
        "2001:db8::1:443 -> 2001:db8::2:50000 TCP TTL:64 TOS:0x0 ID:1 IpLen:40 DgmLen:60"
    ]
    (b,) = run(tcp)
    assert (b["src"], b["sport"], b["dst"], b["dport"]) == (
        "2001:db8::1",
        443,
        "2001:db8::2",
        50000,
    )


def test_full_ipv6_split_needs_the_protocol():
    head = [
        "[**] [1:5:1] m [**]",
        "[Priority: 0] ",
        "01/19-15:53:27.000001 2001:db8::6011:b29b:80 -> 2001:db8::1:50000",
    ]
    (a,) = run(head + ["TCP TTL:64 TOS:0x0 ID:0 IpLen:40 DgmLen:60"])
    assert (a["src"], a["sport"]) == ("2001:db8::6011:b29b", 80)
    (b,) = run(head[:2] + [head[2][:-1], "IPV6-ICMP TTL:64 TOS:0x0 ID:0 IpLen:40 DgmLen:60"])
    assert (b["src"], b["sport"]) == ("2001:db8::6011:b29b:80", None)
    (c,) = run(head)  # cut before the IP header line: no guessing
    assert isinstance(c, ParseError) and "split unknown" in c.reason


def test_fragment_at_start_is_one_error_and_no_alert():
    lines = [
        "[Classification: Misc activity] [Priority: 3] ",
        "10/06-11:19:11.954640 00:0C:29:A5:B7:A2 -> 00:50:56:E1:9B:9D type:0x800 len:0x62",
        "192.168.175.129 -> 198.51.100.110 ICMP TTL:64 TOS:0x0 ID:682 IpLen:20 DgmLen:84 DF",
        "Type:8  Code:0  ID:12   Seq:1  ECHO",
        "",
        S2,
    ]
    out = run(lines)
    assert len(out) == 2
    assert out[0] == ParseError(1, "fragment without alert header", lines[0])
    assert out[1]["sid"] == 2925


def test_fast_line_right_after_a_block():
    out = run(BLOCK[:-1] + [S2])
    assert [a["format"] for a in out] == ["snort2-full", "snort2-fast"]


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        S2[:40] + "\x00" + S2[40:],
        S2[:40] + "\udcff\x01" + S2[40:],
        S2 + "\x1b[0m",
        "\x00\x01\x02\x03",
    ],
)
def test_binary_lines(bad):
    e = err(bad)
    assert e.reason == "binary data" and e.lineno == 1
    assert "\x00" not in e.text and "\udcff" not in e.text and "\x01" not in e.text


def test_binary_from_bytes():
    data = S2.encode() + b"\n" + S2.encode()[:30] + b"\xff\x02" + S2.encode()[30:] + b"\n"
    out = run(split_lines(data))
    assert isinstance(out[0], dict)
    assert out[1].reason == "binary data" and out[1].lineno == 2


def test_overlong_line():
    e = err(S2 + " " * 200, max_line=100)
    assert e.reason == "line too long"
    assert len(e.text) < 300
    assert isinstance(run([S2], max_line=len(S2))[0], dict)


def test_bad_line_inside_block_fails_the_block_once():
    lines = BLOCK[:3] + ["\x00\x00garbage\n"] + BLOCK[3:]
    out = run(lines)
    assert len(out) == 1 and out[0].reason == "binary data: line 4" and out[0].lineno == 1


def test_blank_and_comment_lines_are_silent():
    assert run(["\n", "# comment\n", "   \n", "\r\n"]) == []
    assert parse_line("", now=NOW) is None
    assert parse_line("# x", now=NOW) is None


def test_non_alert_lines():
    out = run(["Commencing packet processing\n", "Packet Statistics\n"])
    assert [(e.lineno, e.reason) for e in out] == [(1, "not an alert"), (2, "not an alert")]


# -- forced format and parse_line ----------------------------------------------------------


def test_forced_format():
    assert one(S2, force="snort2-fast")["format"] == "snort2-fast"
    e = err(S2, force="suricata-fast")
    assert e.reason == "not the forced format: looks like snort2-fast"
    e = err(SURI, force="snort2-fast")
    assert e.reason.startswith("not the forced format")
    # forcing snort2-full keeps Snort 2's ASCII quotes, which auto-detection reads as Snort 3
    block = [
        '[**] [1:1:1] "q" [**]',
        "[Priority: 0] ",
        "01/29-16:06:24.017716 192.0.2.1 -> 192.0.2.2",
    ]
    assert run(block)[0]["msg"] == "q"
    forced = run(block, force="snort2-full")[0]
    assert (forced["msg"], forced["format"]) == ('"q"', "snort2-full")
    assert run(block, force="snort2-fast")[0].reason.startswith("not the forced format")
    with pytest.raises(ValueError):
        AlertParser(now=NOW, force="snort4")


def test_parse_line():
    assert parse_line(S2, now=NOW)["sid"] == 2925
    assert isinstance(parse_line("garbage", now=NOW), ParseError)
    assert isinstance(parse_line(BLOCK[0], now=NOW), ParseError)
    assert parse_line(S2, now=NOW, year=2001)["ts"] == "2001-07-07T17:40:59.924910"


# -- property: render -> parse round trip ----------------------------------------------------

_v4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
_v6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
_msg = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(
    lambda m: "[**]" not in m
)


@settings(max_examples=500, deadline=None)
@given(
    fmt=st.sampled_from(["snort2-fast", "snort3-fast", "suricata-fast"]),
    ts=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2026, 11, 28)),
    ids=st.tuples(st.integers(1, 200), st.integers(1, 10**7), st.integers(0, 50000)),
    msg=_msg,
    cls=st.one_of(st.none(), st.sampled_from(["Misc activity", "Attempted Information Leak"])),
    prio=st.integers(0, 4),
    proto=st.sampled_from(["TCP", "UDP", "ICMP", "IPV6-ICMP", "PROTO:255"]),
    v6=st.booleans(),
    addrs=st.data(),
    ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
)
def test_render_parse_round_trip(fmt, ts, ids, msg, cls, prio, proto, v6, addrs, ports):
    src, dst = (addrs.draw(_v6 if v6 else _v4) for _ in range(2))
    with_ports = fmt == "suricata-fast" or proto in ("TCP", "UDP")
    sport, dport = ports if with_ports else (None, None)

    def side(a, p):
        return a if p is None else f"{a}:{p}"

    if fmt == "suricata-fast":
        stamp = ts.strftime("%m/%d/%Y-%H:%M:%S.%f") + "  "
        mid = f"{msg} [**] [Classification: {cls or '(null)'}] "
    else:
        stamp = (
            ts.strftime("%m/%d/%y-%H:%M:%S.%f")
            if fmt == "snort2-fast"
            else ts.strftime("%y/%m/%d-%H:%M:%S.%f")
        )
        stamp += "  " if fmt == "snort2-fast" else " "
        shown = f'"{msg}"' if fmt == "snort3-fast" else msg
        mid = f"{shown} [**] " + (f"[Classification: {cls}] " if cls else "")
    line = f"{stamp}[**] [{ids[0]}:{ids[1]}:{ids[2]}] {mid}[Priority: {prio}] {{{proto}}} "
    line += f"{side(src, sport)} -> {side(dst, dport)}"
    if v6 and fmt != "suricata-fast" and sport is not None and _bare_too(src, sport, dst, dport):
        # Snort's text also reads as a fragment's (no ports): an error, never a guess.
        assert "ambiguous" in err(line).reason
        return
    a = one(line)
    assert a["format"] == fmt
    assert a["ts"] == ts.isoformat(timespec="microseconds")
    assert (a["gid"], a["sid"], a["rev"]) == ids
    assert (a["msg"], a["classification"], a["priority"], a["proto"]) == (msg, cls, prio, proto)
    # An IPv4-mapped address is its IPv4 address (banpipe.address).
    src, dst = canonical(src), canonical(dst)
    assert (a["src"], a["sport"], a["dst"], a["dport"]) == (src, sport, dst, dport)


_LINES = [
    S2,
    SURI,
    BLOCK[0],
    BLOCK[1],
    BLOCK[2],
    BLOCK[3],
    BLOCK[5],
    "",
    "#x",
    "Sep  5 16:05:26 dev snort: [1:2:3] m [Priority: 3] {UDP} 192.0.2.1:5 -> 192.0.2.2:6",
]


def _bare_too(src: str, sport: int, dst: str, dport: int) -> bool:
    """Whether "src:sport -> dst:dport" also reads as two bare IPv6 addresses.

    Only as inet_ntop prints them: with "::", the text must be the compressed form.
    """
    import ipaddress

    for text in (f"{src}:{sport}", f"{dst}:{dport}"):
        try:
            compressed = ipaddress.IPv6Address(text).compressed
        except ValueError:
            return False
        if "::" in text and text.lower() != compressed:
            return False
    return True


@st.composite
def _mutated_lines(draw):
    base = draw(st.sampled_from(_LINES))
    pos = draw(st.integers(0, len(base)))
    cut = draw(st.integers(0, 5))
    ins = draw(st.text(max_size=4))
    return base[:pos] + ins + base[pos + cut :]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_mutated_lines(), st.text(max_size=80)), max_size=12))
def test_garbage_never_raises_and_alerts_stay_valid(lines):
    from banpipe.alert import problem

    parsers._MIDDLES.clear()
    cold = run(lines)
    assert run(lines) == cold  # the cached fast path agrees with the full parse
    for item in cold:
        if isinstance(item, dict):
            assert problem(item) is None, item
            for key in ("src", "dst"):
                if item[key] is not None:
                    assert str(ipaddress.ip_address(item[key])) == item[key]
            for key in ("sport", "dport"):
                assert item[key] is None or 0 <= item[key] <= 65535
        else:
            assert isinstance(item, ParseError) and item.reason.startswith(REASONS)


# -- issue 10: what the IDS source prints (more in samples/ids_source.txt) -----------------


def test_year_after_new_year_read_on_new_years_eve():
    # A stamp a few seconds ahead of a clock (or of an anchor refreshed every 60 s) on
    # 31 December is next year's, not last year's.
    assert _ts("01/01-00:00:20.000000", datetime(2026, 12, 31, 23, 59, 30)) == (
        "2027-01-01T00:00:20.000000"
    )
    assert _ts("12/31-23:59:50.000000", datetime(2027, 1, 1, 0, 0, 10)) == (
        "2026-12-31T23:59:50.000000"
    )
    p = AlertParser(now=datetime(2026, 12, 31, 23, 59, 30))
    line = "01/01-00:00:20.000000  [**] [1:1:1] m [**] [Priority: 0] {ICMP} 192.0.2.1 -> 192.0.2.2"
    assert p.feed(line, 1)[0]["ts"].startswith("2027-")
    p.set_now(datetime(2027, 1, 1, 0, 1))
    assert p.feed(line, 2)[0]["ts"].startswith("2027-")


def test_relay_tags_are_configurable():
    line = "Sep  5 16:05:26 gw ids-eth0[4]: [1:2:3] m [Priority: 3] {TCP} 198.51.100.9:1 -> 192.0.2.1:2"
    assert err(line).reason == "not an alert"
    a = one(line, relay_tags=["IDS-eth0"])
    assert (a["src"], a["format"]) == ("198.51.100.9", "snort-syslog")
    # the defaults go when the list is given: only what it names counts
    assert err(line.replace("ids-eth0[4]", "snort[4]"), relay_tags=["ids-eth0"]).reason == (
        "not an alert"
    )


def test_forged_alert_inside_another_programs_message_is_never_an_alert():
    forged = "2026-10-10T16:08:06+00:00 web app[7]: login failed for user 10/10-16:08:05.297269  [**] [1:1:1] x [**] [Priority: 1] {TCP} 198.51.100.99:1 -> 10.0.0.1:22"
    assert alerts(run([forged])) == []
    # the same text as a torn line of an alert file: the text before it is no cut alert
    assert alerts(run([forged[forged.index("login") :]])) == []
    # a real torn line still keeps its alert
    assert len(alerts(run(["07/07-17:40:59.92" + S2]))) == 1


def test_cut_syslog_line_is_an_error():
    e = err(
        "Sep  5 16:05:26 dev snort: [1:1000017:0] UDP Connection [Classification: Misc activity] [Priority: 3] {UDP} 10.150.10.44:55776 -> 10.25.10.2"
    )
    assert e.reason == (
        "malformed alert: port on one side only (line cut?): 10.150.10.44:55776 -> 10.25.10.2"
    )


def test_a_reading_inet_ntop_cannot_print_is_not_a_reading():
    # Snort prints IPv6 with inet_ntop: "::" never stands for one zero group (RFC 5952
    # 4.2.2), so "2001:db8::a1b2:c3d4:e5f6:789a:1234" is no bare address Snort printed.
    a = one(
        "04/11-00:36:01.316702  [**] [1:9:1] m [**] [Priority: 0] {TCP} "
        "2001:db8::a1b2:c3d4:e5f6:789a:1234 -> 2001:db8:ffff::1:22"
    )
    assert (a["src"], a["sport"], a["dst"], a["dport"]) == (
        "2001:db8::a1b2:c3d4:e5f6:789a",
        1234,
        "2001:db8:ffff::1",
        22,
    )
    # both texts canonical either way: still two readings, still an error
    e = err(
        "04/11-00:36:01.316702  [**] [1:9:1] m [**] [Priority: 0] {TCP} "
        "2001:db8:5::a:443 -> 2001:db8:ffff::1:22"
    )
    assert "ambiguous" in e.reason
