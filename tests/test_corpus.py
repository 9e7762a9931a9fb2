"""banpipe.parsers against every real alert file in ../shared/corpus (read in place).

For each file: exactly one alert per alert header (headers counted here with a deliberately
simple rule, independent of the parser), every field checked against the source text, and
the per-folder totals of PROVENANCE.md.  One-line alerts are rendered back into their
source line by a test-side renderer; full-format alerts are checked against the header,
address, IP-header and Xref lines of their block.
"""

# Alert lines are test data and read best unbroken.
# ruff: noqa: E501

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from banpipe.alert import problem
from banpipe.parsers import AlertParser, ParseError
from banpipe.pipe import ALERT_KEYS

pytestmark = pytest.mark.corpus

CORPUS = Path(__file__).parents[2] / "shared" / "corpus"
NOW = datetime(2026, 11, 28, 12, 0)
FILES = sorted(p for p in CORPUS.glob("*/*") if p.is_file()) if CORPUS.is_dir() else []
FOLDER_ALERTS = {
    "snort2-fast": 29818,
    "snort2-full": 6976,
    "snort3-fast": 2568,
    "suricata-fast": 35146,
    "mixed-oddities": 9601,
}
TOTAL_ALERTS = 84109

# Corpus lines with text Snort never prints (file -> line -> what).  Both are hand-edited
# lines in a parser test fixture of the BICEP project; every field is still where it
# belongs, so each still gives its alert, and the extra text is reported.
EXTRA_TEXT = {
    "snort3-fast/maldwg_BICEP-snort-image_alert_fast-year-YYMMDD-cicids2017.txt": {
        403: "potential garbage",
        408: "information at the end",
    },
}

FAST_HEADER = re.compile(r"\[\*\*\] \[\d+:\d+:\d+\]")
SYSLOG_HEADER = re.compile(r"snort(\[\d+\])?: \[\d+:\d+:\d+\]")
SYSLOG_PREFIX = re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ ")
TS_TOKEN = re.compile(r"(\d\d/\d\d(?:/\d\d(?:\d\d)?)?)-\d\d:\d\d:\d\d\.\d{6}")
ADDRS_AT_END = re.compile(r"(.*\} )(\S*) -> (\S*)\s*$")
UNKNOWN_TAG = re.compile(
    r"\[(?!Classification: |Priority: |Raw pkt: |\*\*\])[A-Za-z][\w ]*: [^\]]*\] "
)
FULL_HEADER = re.compile(r"\[\*\*\] \[(\d+):(\d+):(\d+)\] (.*) \[\*\*\]\s*$")


def rel(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def split_lines(data: bytes) -> list[str]:
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return [line.decode("utf-8", "surrogateescape") for line in lines]


def parse_file(path: Path) -> tuple[list[str], list[tuple[int, object]]]:
    """(lines without line ends, [(lineno of the line that completed it, alert/error)])."""
    lines = split_lines(path.read_bytes())
    p = AlertParser(now=NOW)
    out = []
    for n, line in enumerate(lines, 1):
        out += [(n, o) for o in p.feed(line, n)]
    out += [(len(lines), o) for o in p.flush()]
    return [line.rstrip("\r\n") for line in lines], out


def is_full_file(lines: list[str]) -> bool:
    return any(line.startswith("[**] [") for line in lines)


def count_headers(lines: list[str]) -> int:
    if is_full_file(lines):
        return sum(line.startswith("[**] [") for line in lines)
    return sum(bool(FAST_HEADER.search(line) or SYSLOG_HEADER.search(line)) for line in lines)


def has_ports(fmt: str, proto: str | None) -> bool:
    """Test-side statement of the rule: Suricata always, Snort for TCP/UDP only."""
    if fmt == "suricata-fast":
        return True
    p = (proto or "").upper().removeprefix("PROTO:")
    return p in ("TCP", "UDP") or (p.isdigit() and int(p) in (6, 17))


def canon_side(tok: str, ports: bool) -> tuple[str | None, int | None]:
    if not tok:
        return None, None
    if tok.count(":") <= 1 and "." in tok:
        addr, _, port = tok.partition(":")
        return str(ipaddress.IPv4Address(addr)), int(port) if port else None
    if ports:
        addr, _, port = tok.rpartition(":")
        return str(ipaddress.IPv6Address(addr)), int(port)
    return str(ipaddress.IPv6Address(tok)), None


def side(addr: str | None, port: int | None) -> str:
    if addr is None:
        return ""
    return addr if port is None else f"{addr}:{port}"


def stamp(ts: str, kind: str, fmt: str) -> str:
    """The time stamp as the IDS printed it; kind is the source token's shape."""
    dt = datetime.fromisoformat(ts)
    if kind == "yearless":
        return dt.strftime("%m/%d-%H:%M:%S.%f")
    if fmt == "suricata-fast":
        return dt.strftime("%m/%d/%Y-%H:%M:%S.%f")
    if fmt.startswith("snort3"):
        return dt.strftime("%y/%m/%d-%H:%M:%S.%f")
    return dt.strftime("%m/%d/%y-%H:%M:%S.%f")


ACTION_CASE = {"snort2-fast": {"wdrop": "WDrop", "cdrop": "CDrop", "drop": "Drop"}}
ACTION_CASE["suricata-fast"] = {"wdrop": "wDrop", "drop": "Drop"}


def render_fast(a: dict, kind: str) -> str:
    """Test-side renderer: an alert back into its alert_fast line (canonical addresses)."""
    fmt = a["format"]
    s3 = fmt == "snort3-fast"
    line = stamp(a["ts"], kind, fmt) + (" " if s3 else "  ")
    if a["action"]:
        line += f"[{ACTION_CASE.get(fmt, {}).get(a['action'], a['action'])}] "
    msg = f'"{a["msg"]}"' if s3 else a["msg"]
    line += f"[**] [{a['gid']}:{a['sid']}:{a['rev']}] {msg} [**] "
    if a["classification"] is not None:
        line += f"[Classification: {a['classification']}] "
    elif fmt == "suricata-fast":
        line += "[Classification: (null)] "
    if a["priority"] is not None:
        line += f"[Priority: {a['priority']}] "
    if a["proto"] is not None:
        line += f"{{{a['proto']}}} {side(a['src'], a['sport'])} -> {side(a['dst'], a['dport'])}"
    return line


def render_syslog(a: dict) -> str:
    dt = datetime.fromisoformat(a["ts"])
    line = f"{dt:%b} {dt.day:2d} {dt:%H:%M:%S}"
    line += f" [{a['gid']}:{a['sid']}:{a['rev']}] {a['msg']} "
    if a["classification"] is not None:
        line += f"[Classification: {a['classification']}] "
    line += f"[Priority: {a['priority']}] {{{a['proto']}}} "
    return line + f"{side(a['src'], a['sport'])} -> {side(a['dst'], a['dport'])}"


def canonical_source(line: str, a: dict) -> str:
    """The source line with its addresses canonicalised and unknown tags dropped."""
    head, marker, tail = line.partition("[**] [")
    if marker:
        ids, _, rest = tail.partition("] ")
        msg_end = rest.index(" [**]") + len(" [**] ")
        rest = rest[:msg_end] + UNKNOWN_TAG.sub("", rest[msg_end:])
        line = f"{head}[**] [{ids}] {rest}"
    m = ADDRS_AT_END.match(line)
    if m is None:
        return line
    ports = has_ports(a["format"], a["proto"])
    src, dst = canon_side(m[2], ports), canon_side(m[3], ports)
    return m[1] + side(*src) + " -> " + side(*dst)


SNORT_SYSLOG = re.compile(r"([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) \S+ snort(?:\[\d+\])?: (.*)$")


def check_one_line_alert(line: str, a: dict, torn: str | None, extra: str | None) -> None:
    if torn:
        line = line[len(torn) :]
    if extra:
        line = line.replace(f" {extra}", "", 1)
    if a["format"] == "snort-syslog":
        m = SNORT_SYSLOG.match(line)
        assert m, line
        assert render_syslog(a) == canonical_source(f"{m[1]} {m[2]}", a)
        return
    m = SYSLOG_PREFIX.match(line)
    if m and not line[:1].isdigit():
        line = line[m.end() :]
    token = TS_TOKEN.match(line)
    assert token, line
    kind = "yearless" if len(token[1]) == 5 else "year"
    rendered = render_fast(a, kind)
    source = canonical_source(line, a)
    if "[Raw pkt:" in source:
        assert source.startswith(rendered + "[**] [Raw pkt: "), (rendered, source)
    else:
        assert rendered == source


def blocks(lines: list[str]) -> list[list[str]]:
    """Test-side segmentation: a block runs from a header to a blank line or next header."""
    found, cur = [], None
    for line in lines:
        if line.startswith("[**] ["):
            cur = [line]
            found.append(cur)
        elif not line.strip():
            cur = None
        elif cur is not None:
            cur.append(line)
    return found


def check_block(block: list[str], a: dict) -> None:
    h = FULL_HEADER.match(block[0])
    assert h, block[0]
    msg = h[4][1:-1] if a["format"] == "snort3-full" else h[4]
    assert (a["gid"], a["sid"], a["rev"], a["msg"]) == (int(h[1]), int(h[2]), int(h[3]), msg)
    outer, in_dump = [], False
    for line in block[1:]:
        if line.startswith("** ORIGINAL DATAGRAM DUMP"):
            in_dump = True
        elif line.startswith("** END OF DUMP"):
            in_dump = False
        elif not in_dump:
            outer.append(line)
    ts_i = next(i for i, line in enumerate(outer) if TS_TOKEN.match(line))
    ts_line = outer[ts_i]
    token = TS_TOKEN.match(ts_line)
    kind = "yearless" if len(token[1]) == 5 else "year"
    assert token[0] == stamp(a["ts"], kind, a["format"])
    rest = ts_line[token.end() :].strip()
    proto = None
    if " type:0x" in rest:
        words = outer[ts_i + 1].split()
        addrs = (words[0], words[2]) if words[1:2] == ["->"] else ("", "")
        proto = words[3] if addrs[0] else None
    else:
        addrs = tuple(rest.split(" -> ")) if rest else ("", "")
        proto = next((ln.split()[0] for ln in outer[ts_i + 1 :] if " TTL:" in ln), None)
    assert a["proto"] == proto
    ports = has_ports(a["format"], proto)
    assert (a["src"], a["sport"]) == canon_side(addrs[0], ports)
    assert (a["dst"], a["dport"]) == canon_side(addrs[1], ports)
    refs = []
    for line in outer:
        if line.startswith("[Xref => "):
            refs += line.rstrip()[len("[Xref => ") : -1].split("][Xref => ")
    assert a["refs"] == refs


def test_corpus_present_or_skip():
    if not FILES:
        pytest.skip(f"corpus not present at {CORPUS}")
    assert len(FILES) == 53


@pytest.mark.parametrize("path", FILES, ids=[rel(p) for p in FILES])
def test_corpus_file(path: Path):
    lines, out = parse_file(path)
    got = [(n, o) for n, o in out if isinstance(o, dict)]
    errs = [(n, o) for n, o in out if isinstance(o, ParseError)]
    noted = EXTRA_TEXT.get(rel(path), {})
    assert len(got) == count_headers(lines)
    for lineno in noted:
        assert any(
            e.lineno == lineno and e.reason.startswith("extra text ignored") for _, e in errs
        )
    for _, a in got:
        assert tuple(a) == ALERT_KEYS
        assert problem(a) is None, a
    if is_full_file(lines):
        full = [a for _, a in got]
        assert all(a["format"] in ("snort2-full", "snort3-full") for a in full)
        bl = blocks(lines)
        assert len(bl) == len(full)
        for block, a in zip(bl, full):
            check_block(block, a)
    else:
        torn = {e.lineno: e.text for _, e in errs if "torn line" in e.reason}
        for n, a in got:
            check_one_line_alert(lines[n - 1], a, torn.get(n), noted.get(n))


def test_folder_totals_match_provenance():
    if not FILES:
        pytest.skip(f"corpus not present at {CORPUS}")
    table = (CORPUS / "PROVENANCE.md").read_text(encoding="utf-8")
    for folder, total in FOLDER_ALERTS.items():
        assert re.search(rf"^\| {folder} \| \d+ \| {total} \|", table, re.M), folder
    headers, alerts = Counter(), Counter()
    for path in FILES:
        lines, out = parse_file(path)
        headers[path.parent.name] += count_headers(lines)
        alerts[path.parent.name] += sum(isinstance(o, dict) for _, o in out)
    assert dict(headers) == FOLDER_ALERTS
    assert sum(headers.values()) == TOTAL_ALERTS
    expected = Counter(FOLDER_ALERTS)
    assert alerts == expected


def test_non_alert_lines_are_reported():
    if not FILES:
        pytest.skip(f"corpus not present at {CORPUS}")
    _, out = parse_file(
        CORPUS / "mixed-oddities/LiLith666-D_CodeAlpha_snort3-console-banner-plus-alert_fast.txt"
    )
    reasons = Counter(o.reason for _, o in out if isinstance(o, ParseError))
    assert reasons == {"not an alert": 293}
    _, out = parse_file(
        CORPUS / "mixed-oddities/billy-enrizky_SAIDS_alert.full-with-mac-truncated_lines1-617.txt"
    )
    errs = [o for _, o in out if isinstance(o, ParseError)]
    assert [(e.lineno, e.reason) for e in errs] == [(1, "fragment without alert header")]


# -- exact alerts for lines quoted in formats.md ---------------------------------------------


def corpus_lines(name: str, first: int, last: int) -> list[str]:
    if not FILES:
        pytest.skip(f"corpus not present at {CORPUS}")
    return split_lines((CORPUS / name).read_bytes())[first - 1 : last]


def parsed(name: str, first: int, last: int | None = None) -> list:
    p = AlertParser(now=NOW)
    out = []
    for n, line in enumerate(corpus_lines(name, first, last or first), first):
        out += p.feed(line, n)
    return out + p.flush()


def alert(
    ts, gid, sid, rev, msg, cls, prio, proto, src, sport, dst, dport, fmt, action=None, refs=()
):
    return {
        "v": 1,
        "ts": ts,
        "gid": gid,
        "sid": sid,
        "rev": rev,
        "msg": msg,
        "classification": cls,
        "priority": prio,
        "proto": proto,
        "src": src,
        "sport": sport,
        "dst": dst,
        "dport": dport,
        "action": action,
        "refs": list(refs),
        "format": fmt,
    }


EXACT = [
    (
        ("snort2-fast/ShreyaKunda_Snort_Suricata_Analysis_friday_pcap-cicids2017.txt", 550),
        alert(
            "2026-07-07T17:40:59.924910",
            1,
            2925,
            3,
            "INFO web bug 0x0 gif attempt",
            "Misc activity",
            3,
            "TCP",
            "173.241.242.143",
            80,
            "192.168.10.15",
            49645,
            "snort2-fast",
        ),
    ),
    (
        ("snort2-fast/limoncello7_security_snort.alert.fast-ipv6-with-ports.txt", 2),
        alert(
            "2026-04-11T00:36:01.316702",
            1,
            1000009,
            1,
            "Possible TCP SYN Flood attack detected",
            None,
            0,
            "TCP",
            "2a01:4b00:b021:ed00:300f:f54f:9daa:3a06",
            56665,
            "2a02:26f0:5d00:4::6011:b29b",
            80,
            "snort2-fast",
        ),
    ),
    (
        ("snort2-fast/batoul-22-k_Snort_ELK_alert_fast-PROTO006.txt", 1),
        alert(
            "2026-02-03T10:39:32.007074",
            1,
            1000001,
            1,
            "LOCAL Nmap SYN scan",
            "Attempted Reconnaissance",
            2,
            "PROTO:006",
            "10.10.0.20",
            33166,
            "10.10.0.30",
            80,
            "snort2-fast",
        ),
    ),
    (
        ("snort3-fast/dotuyen2409_BK-IDS_alert_fast-drop-action-utf8.txt", 1),
        alert(
            "2026-04-23T12:19:00.225808",
            1,
            1000001,
            5,
            "[DROP] ET-PRO ET WEB_SPECIFIC_APPS Dấu hiệu XSS Reflected cơ bản",
            None,
            0,
            "TCP",
            "192.168.142.129",
            33440,
            "172.18.0.5",
            80,
            "snort3-fast",
            action="drop",
        ),
    ),
    (
        ("snort3-fast/dotuyen2409_BK-IDS_alert_fast-gid116-eth-no-addresses_lines1-41.txt", 1),
        alert(
            "2026-04-26T10:29:16.526790",
            116,
            6,
            1,
            "(ipv4) IPv4 datagram length > captured length",
            None,
            3,
            "eth",
            None,
            None,
            None,
            None,
            "snort3-fast",
        ),
    ),
    (
        ("snort3-fast/maldwg_BICEP-snort-image_alert_fast2-year-YYMMDD-ctu13.txt", 1),
        alert(
            "2011-08-17T12:24:52.063717",
            122,
            7,
            1,
            "(port_scan) TCP filtered portsweep",
            None,
            3,
            "TCP",
            "147.32.84.165",
            1060,
            "94.63.150.63",
            80,
            "snort3-fast",
        ),
    ),
    (
        ("suricata-fast/OISF_suricata-verify_http2-files_fast.log", 1),
        alert(
            "2014-08-02T10:50:25.823699",
            1,
            6,
            1,
            "(null)",
            None,
            3,
            "TCP",
            "::1",
            3000,
            "::1",
            56508,
            "suricata-fast",
        ),
    ),
    (
        ("suricata-fast/KAKAUsafe_IDS_fast-ipv6.log", 1),
        alert(
            "2025-11-21T18:28:52.752254",
            1,
            1,
            1,
            "ICMP Test Rule",
            None,
            3,
            "IPv6-ICMP",
            "fe80::8ea3:99ff:fedf:e2be",
            134,
            "ff02::1",
            0,
            "suricata-fast",
        ),
    ),
    (
        ("suricata-fast/YBARAKA1_4-year-project_fast-raw-pkt.log", 1),
        alert(
            "1999-12-03T06:34:57.474450",
            1,
            2200003,
            2,
            "SURICATA IPv4 truncated packet",
            "Generic Protocol Command Decode",
            3,
            None,
            None,
            None,
            None,
            None,
            "suricata-fast",
        ),
    ),
    (
        ("mixed-oddities/elastic_integrations_snort_test-log-syslog.log", 1),
        alert(
            "2026-09-05T16:05:26.000000",
            1,
            1000017,
            0,
            "UDP Connection",
            "Misc activity",
            3,
            "UDP",
            "10.150.10.44",
            55776,
            "10.25.10.22",
            32414,
            "snort-syslog",
        ),
    ),
    (
        ("mixed-oddities/fireblock29_My_SIEM_syslog-ng-wrapped-alert_fast.log", 3),
        alert(
            "2026-10-10T16:08:05.297269",
            1,
            1000001,
            1,
            "ICMP Ping detected",
            None,
            0,
            "IPV6-ICMP",
            "::",
            None,
            "ff02::16",
            None,
            "snort2-fast",
        ),
    ),
    (
        (
            "mixed-oddities/ShreyaKunda_Snort_Suricata_Analysis_thursday_console-truncated-first-line.txt",
            2,
        ),
        alert(
            "2026-07-06T23:10:03.943339",
            1,
            2023207,
            1,
            " 1|ET TROJAN Windows Microsoft Windows DOS prompt command Error not recognized",
            "A Network Trojan was detected",
            1,
            "TCP",
            "192.168.10.8",
            54131,
            "205.174.165.73",
            444,
            "snort2-fast",
        ),
    ),
    (
        ("snort2-full/dveleztx_Week-9-HoneyPot-Project_mhn-snort_alert.full.txt", 369, 375),
        alert(
            "2026-11-17T10:29:11.303954",
            1,
            2011716,
            4,
            "ET SCAN Sipvicious User-Agent Detected (friendly-scanner)",
            "Attempted Information Leak",
            2,
            "UDP",
            "148.72.169.215",
            5396,
            "10.128.0.4",
            5060,
            "snort2-full",
            refs=[
                "http://doc.emergingthreats.net/2011716",
                "http://blog.sipvicious.org/",
                "http://code.google.com/p/sipvicious/",
            ],
        ),
    ),
    (
        ("snort2-full/kunalgupta007_XssDetectionUsingIds_alert.ids-windows-crlf-ipv6.txt", 1, 6),
        alert(
            "2026-01-19T15:53:26.295175",
            1,
            1001004,
            0,
            "SQL Injection Found",
            None,
            0,
            "TCP",
            "fe80::f80f:186e:5c40:c019",
            5357,
            "fe80::8cdf:ed7f:7699:37bd",
            51949,
            "snort2-full",
        ),
    ),
    (
        ("snort2-full/Replayer88_Monitoring-Network-Traffic_alert.full.txt", 85, 95),
        alert(
            "2026-01-29T16:06:24.017716",
            1,
            2000000,
            0,
            "ICMP test",
            None,
            0,
            "ICMP",
            "192.168.187.128",
            None,
            "192.168.187.131",
            None,
            "snort2-full",
        ),
    ),
    (
        ("mixed-oddities/buckiboy_uni_scripts_snort3-alert_full.txt", 755, 756),
        alert(
            "2026-06-08T15:00:23.628551",
            1,
            51018,
            1,
            "SERVER-OTHER DualDesk v20 Proxy.exe long string denial of service attempt",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            "snort3-full",
        ),
    ),
    (
        ("mixed-oddities/billy-enrizky_SAIDS_alert.full-with-mac-truncated_lines1-617.txt", 6, 11),
        alert(
            "2026-10-06T11:19:11.954640",
            1,
            384,
            5,
            "ICMP PING",
            "Misc activity",
            3,
            "ICMP",
            "192.168.175.129",
            None,
            "142.250.187.110",
            None,
            "snort2-full",
        ),
    ),
]


@pytest.mark.parametrize(
    ("where", "want"), EXACT, ids=[f"{w[0].split('/')[1][:40]}:{w[1]}" for w, _ in EXACT]
)
def test_formats_md_examples(where, want):
    assert parsed(*where) == [want]
