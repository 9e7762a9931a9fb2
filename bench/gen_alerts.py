#!/usr/bin/env python3
"""Generate realistic Snort/Suricata alert files for benchmarks and soak tests.

Deterministic for a given ``--seed``. Lines imitate what real sensors write (see
docs/formats.md): Snort 2 and Snort 3 alert_fast (with and without ``-y``, Snort 3
``[drop]``), Suricata fast.log (``[Drop]``/``[wDrop]``, ``(null)`` classification,
expanded IPv6), Snort 2/3 alert_full blocks (classification line, IP/TCP/UDP/ICMP header
lines, Xref lines), IPv4 and IPv6 (compressed and expanded, glued ports), many sources
with a skewed distribution (a few noisy scanners, a long tail).

    python bench/gen_alerts.py --count 1000000 --style fast -o /tmp/alert_fast.txt
    python bench/gen_alerts.py --count 10000 --style full -o /tmp/alert_full.txt
    python bench/gen_alerts.py --style realistic -o /tmp/realistic.txt   # issue 12's file
"""

from __future__ import annotations

import argparse
import bisect
import ipaddress
import random
import sys
from collections.abc import Iterator

FAST_STYLES = ("snort2-fast", "snort3-fast", "suricata-fast")
FULL_STYLES = ("snort2-full", "snort3-full")

RULES = [
    # gid, sid, rev, msg, classification or None, priority
    (1, 2402000, 5001, "ET DROP Dshield Block Listed Source group 1", "Misc Attack", 2),
    (
        1,
        2403440,
        44968,
        "ET CINS Active Threat Intelligence Poor Reputation IP TCP group 71",
        "Misc Attack",
        2,
    ),
    (1, 2003068, 6, "ET SCAN Potential SSH Scan OUTBOUND", "Attempted Information Leak", 2),
    (
        1,
        2011716,
        4,
        "ET SCAN Sipvicious User-Agent Detected (friendly-scanner)",
        "Attempted Information Leak",
        2,
    ),
    (1, 2025627, 5, "ET INFO [eSentire] Possible Kali Linux Updates", "Misc activity", 3),
    (
        1,
        48402,
        1,
        "MALWARE-CNC Win.Trojan.Emotet variant outbound connection attempt",
        "A Network Trojan was detected",
        1,
    ),
    (1, 469, 3, "ICMP PING NMAP", "Attempted Information Leak", 2),
    (1, 1000001, 1, "LOCAL Nmap SYN scan", None, 0),
    (1, 1000003, 1, "Acesso ao gateway LoRa por um IP fora do padrão", None, 0),
    (122, 7, 2, "(portscan) TCP Filtered Portsweep", "Attempted Information Leak", 2),
    (129, 3, 2, "Data sent on stream not accepting data", "Generic Protocol Command Decode", 3),
    (116, 434, 1, "(icmp4) ICMP ping Nmap", None, 3),
    (
        119,
        28,
        3,
        "(http_inspect) HTTP POST or PUT request without content-length or chunks",
        "Unknown Traffic",
        3,
    ),
    (1, 2200073, 2, "SURICATA IPv4 invalid checksum", "Generic Protocol Command Decode", 3),
    (1, 2230003, 1, "SURICATA TLS invalid handshake message", "Generic Protocol Command Decode", 3),
]
PROTOS = ("TCP",) * 6 + ("UDP",) * 3 + ("ICMP",)
XREFS = (
    "http://doc.emergingthreats.net/2011716",
    "http://www.cinsscore.com",
    "http://cve.mitre.org/cgi-bin/cvename.cgi?name=1999-0016",
    "http://www.securityfocus.com/bid/2666",
)


class Sources:
    """A pool of attacker addresses: a few heavy hitters and a long tail."""

    def __init__(self, rng: random.Random, n4: int = 60000, n6: int = 15000) -> None:
        self.rng = rng
        self.v4 = [
            str(ipaddress.IPv4Address(rng.randrange(0x01000000, 0xDF000000))) for _ in range(n4)
        ]
        self.v6 = [
            str(ipaddress.IPv6Address((0x2001_0DB8 << 96) | rng.getrandbits(64))) for _ in range(n6)
        ]
        self.local4 = [f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(200)]
        self.local6 = ["2001:db8:ffff::" + format(i, "x") for i in range(1, 200)]

    def pick(self, v6: bool) -> tuple[str, str]:
        rng = self.rng
        pool = self.v6 if v6 else self.v4
        # Pareto-ish: index ~ n * u^3 puts most alerts on few addresses.
        src = pool[int(len(pool) * rng.random() ** 3)]
        dst = rng.choice(self.local6 if v6 else self.local4)
        return (src, dst) if rng.random() < 0.8 else (dst, src)


# The realistic mix (issue 12): who attacks whom, and with what, on one gateway.
REAL_WAN = "198.51.100.1"  # our WAN address, also the most attacked victim
REAL_NETWORKS = ("198.51.100.0/26", "2001:db8:1::/64")  # ours: the 64 victims live here
REAL_V4_VICTIMS = 48
REAL_V6_VICTIMS = 16
REAL_SOURCES = 500
REAL_V6_SOURCES = 50
REAL_V6_SHARE = 0.10  # of the alerts
REAL_OUTBOUND = 0.05  # alerts on our own host's traffic towards an attacker (src is ours)
REAL_INSIDE = 0.03  # alerts between two hosts of ours (no offender)
REAL_SIGNATURES = 60
_SIG_WORDS = (
    ("ET SCAN", "Attempted Information Leak", 2),
    ("ET EXPLOIT", "Attempted Administrator Privilege Gain", 1),
    ("ET WEB_SERVER", "Web Application Attack", 1),
    ("ET POLICY", "Potential Corporate Privacy Violation", 3),
    ("ET DOS", "Attempted Denial of Service", 2),
    ("SERVER-WEBAPP", "Web Application Attack", 1),
    ("PROTOCOL-VOIP", "Potentially Bad Traffic", 2),
    ("SURICATA STREAM", "Generic Protocol Command Decode", 3),
    ("ET INFO", "Misc activity", 3),
)
_SIG_WHAT = (
    "Suspicious inbound to MSSQL port 1433",
    "Possible Apache Struts OGNL Expression Injection",
    "NMAP -sS window 1024",
    "Sipvicious Scan",
    "Possible SQL Injection Attempt UNION SELECT",
    "SSH BruteForce Tool with fake PUTTY version",
    "Zmap User-Agent (Inbound)",
    "Possible Log4j RCE Attempt - 2021/12/12",
    "ESTABLISHED packet out of window",
    "Generic HTTP Directory Traversal",
    "Mozi Botnet Activity",
    "RDP connection request cookie mstshash",
    "Terse alphanumeric executable downloader high likelihood of being hostile",
)


def zipf_cdf(n: int, s: float) -> list[float]:
    """Cumulative weights of ranks 1..n with weight 1/rank**s (for ``bisect``)."""
    out, total = [], 0.0
    for k in range(1, n + 1):
        total += 1.0 / k**s
        out.append(total)
    return [c / total for c in out]


class Realistic:
    """The population of the realistic file: 500 sources (450 IPv4, 50 IPv6) with a
    Zipf spread (s = 1), about 60 signatures (s = 1.1) and the 64 victims of ours
    (48 IPv4 incl. the WAN address, 16 IPv6; s = 1), each ranked in a random order."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        n4 = REAL_SOURCES - REAL_V6_SOURCES
        self.v4 = [
            str(ipaddress.IPv4Address(rng.randrange(0x01000000, 0xDF000000))) for _ in range(n4)
        ]
        self.v6 = [
            str(ipaddress.IPv6Address((0x2001_0DB8_0BAD << 80) | rng.getrandbits(64)))
            for _ in range(REAL_V6_SOURCES)
        ]
        self.ours4 = [f"198.51.100.{i}" for i in range(1, REAL_V4_VICTIMS + 1)]
        self.ours6 = [f"2001:db8:1::{i:x}" for i in range(1, REAL_V6_VICTIMS + 1)]
        self.rules = list(RULES)
        sid = 3_000_000
        while len(self.rules) < REAL_SIGNATURES:
            head, cls, prio = rng.choice(_SIG_WORDS)
            sid += rng.randrange(1, 500)
            what = rng.choice(_SIG_WHAT)
            self.rules.append((1, sid, rng.randrange(1, 12), f"{head} {what}", cls, prio))
        rng.shuffle(self.rules)
        self.cdf4 = zipf_cdf(len(self.v4), 1.0)
        self.cdf6 = zipf_cdf(len(self.v6), 1.0)
        self.cdf_rule = zipf_cdf(len(self.rules), 1.1)
        self.cdf_ours4 = zipf_cdf(len(self.ours4), 1.0)
        self.cdf_ours6 = zipf_cdf(len(self.ours6), 1.0)

    def _rank(self, cdf: list[float]) -> int:
        return min(bisect.bisect_left(cdf, self.rng.random()), len(cdf) - 1)

    def pick(self) -> tuple[tuple, str, str, bool]:
        """(rule, src, dst, v6) of one alert."""
        rng = self.rng
        v6 = rng.random() < REAL_V6_SHARE
        if v6:
            them, ours = self.v6[self._rank(self.cdf6)], self.ours6[self._rank(self.cdf_ours6)]
        else:
            them, ours = self.v4[self._rank(self.cdf4)], self.ours4[self._rank(self.cdf_ours4)]
        rule = self.rules[self._rank(self.cdf_rule)]
        u = rng.random()
        if u < REAL_INSIDE:
            return rule, ours, (self.ours6 if v6 else self.ours4)[rng.randrange(16)], v6
        if u < REAL_INSIDE + REAL_OUTBOUND:
            return rule, ours, them, v6
        return rule, them, ours, v6


def _expand(a: str) -> str:
    return ipaddress.IPv6Address(a).exploded


def _ts(style: str, t: float, short_year: bool) -> str:
    sec = int(t)
    us = int((t - sec) * 1e6)
    day, rem = divmod(sec, 86400)
    mon = 1 + (day // 28) % 12
    dom = 1 + day % 28
    hh, rem = divmod(rem, 3600)
    mm, ss = divmod(rem, 60)
    clock = f"{hh:02d}:{mm:02d}:{ss:02d}.{us:06d}"
    if style == "suricata-fast":
        return f"{mon:02d}/{dom:02d}/2025-{clock}"
    if short_year and style.startswith("snort3"):
        return f"25/{mon:02d}/{dom:02d}-{clock}"
    if short_year:
        return f"{mon:02d}/{dom:02d}/25-{clock}"
    return f"{mon:02d}/{dom:02d}-{clock}"


def _endpoint(style: str, addr: str, port: int, proto: str, v6: bool) -> str:
    if style == "suricata-fast":
        return f"{_expand(addr) if v6 else addr}:{port}"
    if proto in ("TCP", "UDP"):
        return f"{addr}:{port}"
    return addr


def fast_line(rng: random.Random, src: Sources, style: str, t: float, v6: bool) -> str:
    rule = rng.choice(RULES)
    proto = rng.choice(PROTOS)
    s, d = src.pick(v6)
    return format_fast(rng, style, t, rule, proto, s, d, v6)


def format_fast(
    rng: random.Random,
    style: str,
    t: float,
    rule: tuple,
    proto: str,
    s: str,
    d: str,
    v6: bool,
) -> str:
    """One alert_fast line of ``style`` for ``rule`` from ``s`` to ``d`` (ports and the
    producer's optional parts drawn from ``rng``)."""
    gid, sid, rev, msg, cls, prio = rule
    sp, dp = rng.randrange(1024, 65536), rng.choice((22, 23, 80, 443, 445, 3389, 5060, 8080))
    if proto == "ICMP":
        sp, dp = 8, 0
        if v6:
            proto = "IPv6-ICMP" if style == "suricata-fast" else "IPV6-ICMP"
    short_year = rng.random() < 0.1
    ts = _ts(style, t, short_year)
    ends = f"{_endpoint(style, s, sp, proto, v6)} -> {_endpoint(style, d, dp, proto, v6)}"
    if style == "suricata-fast":
        action = rng.choice(("", "", "", "", "[Drop] ", "[wDrop] "))
        c = cls or "(null)"
        return (
            f"{ts}  {action}[**] [{gid}:{sid}:{rev}] {msg} [**] [Classification: {c}] "
            f"[Priority: {prio}] {{{proto}}} {ends}"
        )
    head = f"[**] [{gid}:{sid}:{rev}] "
    c = f" [Classification: {cls}]" if cls else ""
    if style == "snort3-fast":
        action = "[drop] " if rng.random() < 0.05 else ""
        return f'{ts} {action}{head}"{msg}" [**]{c} [Priority: {prio}] {{{proto}}} {ends}'
    return f"{ts}  {head}{msg} [**]{c} [Priority: {prio}] {{{proto}}} {ends}"


def full_block(rng: random.Random, src: Sources, style: str, t: float, v6: bool) -> str:
    gid, sid, rev, msg, cls, prio = rng.choice(RULES)
    proto = rng.choice(PROTOS)
    s, d = src.pick(v6)
    sp, dp = rng.randrange(1024, 65536), rng.choice((22, 80, 443, 5060))
    quoted = f'"{msg}"' if style == "snort3-full" else msg
    lines = [f"[**] [{gid}:{sid}:{rev}] {quoted} [**]"]
    lines.append((f"[Classification: {cls}] " if cls else "") + f"[Priority: {prio}] ")
    if proto == "ICMP" and v6:
        proto = "IPV6-ICMP"
    ends = f"{_endpoint(style, s, sp, proto, v6)} -> {_endpoint(style, d, dp, proto, v6)}"
    lines.append(f"{_ts(style, t, False)} {ends}")
    ttl, ident = rng.randrange(32, 255), rng.randrange(65536)
    lines.append(f"{proto} TTL:{ttl} TOS:0x0 ID:{ident} IpLen:20 DgmLen:{rng.randrange(40, 1500)}")
    if proto == "TCP":
        lines.append(f"******S* Seq: 0x{rng.getrandbits(32):X}  Ack: 0x0  Win: 0x400  TcpLen: 20")
    elif proto == "UDP":
        lines.append(f"Len: {rng.randrange(8, 1400)}")
    else:
        lines.append(f"Type:8  Code:0  ID:{rng.randrange(65536)}   Seq:1  ECHO")
    if rng.random() < 0.5:
        lines.append("".join(f"[Xref => {x}]" for x in rng.sample(XREFS, rng.randrange(1, 4))))
    return "\n".join(lines) + "\n"


_EVE_PROTO = {"TCP": "TCP", "UDP": "UDP", "ICMP": "ICMP"}


def eve_alert(rng: random.Random, src: Sources, t: float, v6: bool, flow_id: int) -> str:
    """One EVE alert record as Suricata 7 writes it (compact JSON, keys in its order)."""
    gid, sid, rev, msg, cls, prio = rng.choice(RULES)
    proto = rng.choice(PROTOS)
    s, d = src.pick(v6)
    sp, dp = rng.randrange(32768, 61000), rng.choice((22, 23, 80, 443, 445, 3389, 5060, 8080))
    sec = int(t)
    day, rem = divmod(sec, 86400)
    hh, rem = divmod(rem, 3600)
    mm, ss = divmod(rem, 60)
    ts = (
        f"2026-{1 + (day // 28) % 12:02d}-{1 + day % 28:02d}T{hh:02d}:{mm:02d}:{ss:02d}"
        f".{int((t - sec) * 1e6):06d}+0100"
    )
    if proto == "ICMP":
        p = "IPv6-ICMP" if v6 else "ICMP"
        ends = f'"src_ip":"{s}","dest_ip":"{d}","proto":"{p}","icmp_type":8,"icmp_code":0'
        fends = f'"src_ip":"{s}","dest_ip":"{d}"'
    else:
        ends = f'"src_ip":"{s}","src_port":{sp},"dest_ip":"{d}","dest_port":{dp},"proto":"{proto}"'
        fends = f'"src_ip":"{s}","dest_ip":"{d}","src_port":{sp},"dest_port":{dp}'
    action = "blocked" if rng.random() < 0.05 else "allowed"
    target = (
        f',"source":{{"ip":"{s}","port":{sp}}},"target":{{"ip":"{d}","port":{dp}}}'
        if rng.random() < 0.2
        else ""
    )
    return (
        f'{{"timestamp":"{ts}","flow_id":{flow_id},"in_iface":"eth0","event_type":"alert",'
        f'{ends},"pkt_src":"wire/pcap","alert":{{"action":"{action}","gid":{gid},'
        f'"signature_id":{sid},"rev":{rev},"signature":"{msg}","category":"{cls or ""}",'
        f'"severity":{prio or 3}{target},"metadata":{{"created_at":["2019_07_26"],'
        f'"updated_at":["2024_03_01"]}}}},"direction":"to_server","flow":{{"pkts_toserver":'
        f'{rng.randrange(1, 40)},"pkts_toclient":{rng.randrange(0, 40)},"bytes_toserver":'
        f'{rng.randrange(60, 9000)},"bytes_toclient":{rng.randrange(0, 90000)},"start":"{ts}",'
        f"{fends}}}}}"
    )


def eve_other(rng: random.Random, t: float, flow_id: int) -> str:
    """A non-alert EVE record (flow, dns, stats), as fasttail must skip."""
    kind = rng.choice(("flow", "flow", "dns", "stats"))
    ts = f"2026-01-01T00:00:{int(t) % 60:02d}.000000+0100"
    if kind == "stats":
        return (
            f'{{"timestamp":"{ts}","event_type":"stats","stats":{{"uptime":{int(t)},'
            f'"capture":{{"kernel_packets":{rng.randrange(10**9)},"kernel_drops":0}},'
            f'"decoder":{{"pkts":{rng.randrange(10**9)},"bytes":{rng.randrange(10**12)}}}}}}}'
        )
    if kind == "dns":
        return (
            f'{{"timestamp":"{ts}","flow_id":{flow_id},"in_iface":"eth0","event_type":"dns",'
            f'"src_ip":"192.168.1.53","src_port":41234,"dest_ip":"198.51.100.53",'
            f'"dest_port":53,"proto":"UDP","dns":{{"version":3,"type":"request","tx_id":0,'
            f'"id":{rng.randrange(65536)},"rrname":"www.example.com","rrtype":"A"}}}}'
        )
    return (
        f'{{"timestamp":"{ts}","flow_id":{flow_id},"in_iface":"eth0","event_type":"flow",'
        f'"src_ip":"203.0.113.7","src_port":36162,"dest_ip":"198.51.100.2","dest_port":80,'
        f'"proto":"TCP","app_proto":"http","flow":{{"pkts_toserver":6,"pkts_toclient":5,'
        f'"bytes_toserver":486,"bytes_toclient":1722,"start":"{ts}","end":"{ts}","age":0,'
        f'"state":"closed","reason":"timeout","alerted":false}}}}'
    )


def alerts(count: int, style: str, seed: int, v6_share: float) -> Iterator[str]:
    """``count`` alert texts (a line, or a block ending in an empty line) for ``style``.

    ``style`` is one of FAST_STYLES/FULL_STYLES, or ``fast``/``full``/``mixed`` to mix,
    or ``eve`` (EVE alert records) / ``eve-mixed`` (one alert in four records).
    """
    rng = random.Random(seed)
    src = Sources(rng)
    t = 86400.0 * 30
    if style in ("eve", "eve-mixed"):
        # "eve": alert records only; "eve-mixed": three other events to one alert.
        for i in range(count):
            t += rng.expovariate(50.0)
            if style == "eve-mixed" and i % 4:
                yield eve_other(rng, t, 10**15 + i) + "\n"
            else:
                yield eve_alert(rng, src, t, rng.random() < v6_share, 10**15 + i // 3) + "\n"
        return
    if style == "realistic":
        # A day of alert_fast lines from the realistic population (class Realistic),
        # the three producers in runs of 5,000.
        real = Realistic(rng)
        current = rng.choice(FAST_STYLES)
        for i in range(count):
            if i % 5000 == 0:
                current = rng.choice(FAST_STYLES)
            t += rng.expovariate(count / 86400.0)
            rule, s, d, v6 = real.pick()
            yield format_fast(rng, current, t, rule, rng.choice(PROTOS), s, d, v6) + "\n"
        return
    choices = {"fast": FAST_STYLES, "full": FULL_STYLES, "mixed": FAST_STYLES + FULL_STYLES}
    styles = choices.get(style, (style,))
    # Files are mostly one producer; "fast" mixes them in long runs like concatenated logs.
    current = rng.choice(styles)
    for i in range(count):
        if i % 5000 == 0 and len(styles) > 1:
            current = rng.choice(styles)
        t += rng.expovariate(50.0)
        v6 = rng.random() < v6_share
        if current in FULL_STYLES:
            yield full_block(rng, src, current, t, v6) + "\n"
        else:
            yield fast_line(rng, src, current, t, v6) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000, help="alerts (default 1000000)")
    ap.add_argument(
        "--style",
        default="fast",
        choices=("fast", "full", "mixed", "eve", "eve-mixed", "realistic")
        + FAST_STYLES
        + FULL_STYLES,
        help="fast (Snort 2/3 + Suricata lines), full (blocks), mixed, eve (Suricata EVE "
        "alerts), eve-mixed (EVE alerts among other events), realistic "
        "(a day on one gateway, issue 12: 500 sources, 60 signatures, 64 victims of ours; "
        "--v6 is ignored), or one producer",
    )
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--v6", type=float, default=0.2, help="share of IPv6 alerts (default 0.2)")
    ap.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    args = ap.parse_args(argv)
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    try:
        buf: list[str] = []
        for text in alerts(args.count, args.style, args.seed, args.v6):
            buf.append(text)
            if len(buf) >= 10000:
                out.write("".join(buf))
                buf.clear()
        out.write("".join(buf))
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
