"""banpipe.toml: one configuration file for all tools, a section per concern.

Every key is declared once here (name, type, default), so configs, docs and the Ansible
role agree. Unknown keys and wrong types are errors that name the file, line and key:
``/etc/banpipe/banpipe.toml:12: [filter] unknown key 'priorty'``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import netaddr

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PATH = Path("/etc/banpipe/banpipe.toml")


class ConfigError(Exception):
    """A config problem; the message is complete (file, line, key, reason)."""


# --- value converters: each takes the TOML value and returns the typed value or raises
# ValueError with the reason. --------------------------------------------------------

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(value: Any) -> float:
    """Seconds from 90, 1.5, "90s", "5m", "1h30m", "7d", "2w"."""
    if isinstance(value, bool):
        raise ValueError('expected a duration like 3600 or "1h"')
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("duration must not be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text.isdigit():
            return float(text)
        pos, total = 0, 0.0
        for m in _DURATION_RE.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if text and pos == len(text):
            return total
    raise ValueError(f"not a duration: {value!r} (use seconds or e.g. '90s', '5m', '1h', '7d')")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _list_of(item: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def convert(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {type(value).__name__}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except ValueError as exc:
                raise ValueError(f"item {i + 1}: {exc}") from None
        return tuple(out)

    return convert


def _choice(*allowed: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value

    return convert


def parse_address(value: Any) -> str:
    """A single IPv4/IPv6 address in canonical text form."""
    text = _str(value).strip()
    try:
        return str(netaddr.IPAddress(text, flags=netaddr.INET_PTON))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ValueError(f"not an IP address: {value!r}") from None


def parse_network(value: Any) -> str:
    """An address or CIDR network in canonical text form (host bits are cleared)."""
    text = _str(value).strip()
    try:
        if "/" in text:
            addr, _, plen = text.partition("/")
            netaddr.IPAddress(addr, flags=netaddr.INET_PTON)  # strict dotted quads
            if not plen.isdigit():
                raise ValueError
            return str(netaddr.IPNetwork(text).cidr)
        return str(netaddr.IPNetwork(str(netaddr.IPAddress(text, flags=netaddr.INET_PTON))))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ValueError(f"not an IP address or network: {value!r}") from None


_RULE_RE = re.compile(r"^(\d+):(\*|\d+(?:-\d+)?)$")


def parse_rule_pattern(value: Any) -> str:
    """``GID:SID``, ``GID:*`` or ``GID:SID-SID``."""
    text = _str(value).strip()
    m = _RULE_RE.match(text)
    if not m:
        raise ValueError(f"not a rule pattern GID:SID, GID:* or GID:SID-SID: {value!r}")
    sid = m.group(2)
    if "-" in sid:
        lo, hi = sid.split("-")
        if int(lo) > int(hi):
            raise ValueError(f"empty SID range: {value!r}")
    return text


def _log_rate(value: Any) -> str:
    text = _str(value)
    if not re.fullmatch(r"\d+/(second|minute|hour|day)", text):
        raise ValueError(f'expected a rate like "6/minute", got {value!r}')
    return text


def _chain_name(value: Any) -> str:
    text = _str(value)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,27}", text):
        raise ValueError(f"not a usable chain/set/table name: {value!r}")
    return text


def _hook(value: Any) -> str:
    return _choice("INPUT", "FORWARD")(value)


def _duration_pair(value: Any) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("expected [MIN, MAX] durations")
    lo, hi = parse_duration(value[0]), parse_duration(value[1])
    if lo > hi:
        raise ValueError("MIN is larger than MAX")
    return (lo, hi)


# --- sections --------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkConfig:
    """Who "we" are: never banned; with require_ours, only alerts against us count."""

    wan: tuple[str, ...] = ()
    wan_state: str = "/run/banpipe/wan.json"
    networks: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()


@dataclass(frozen=True)
class FilterConfig:
    whitelist: tuple[str, ...] = ()
    whitelist_files: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    priorities: tuple[int, ...] = ()  # empty: every priority
    no_priority: str = "skip"
    reverse_markers: tuple[str, ...] = ("BLOCKED DESTINATION",)
    require_ours: bool = True
    flow_window: float = 0.0  # drop repeat bans of one flow_id within this; 0: off


@dataclass(frozen=True)
class BanConfig:
    base: float = 3600.0
    extend: tuple[float, float] = (300.0, 1800.0)
    max: float = 7 * 86400.0
    recidive_window: float = 30 * 86400.0
    recidive_factor: float = 2.0
    retention: float = 30 * 86400.0
    on_stop: str = "remove"
    spoof_max: int = 500
    spoof_window: float = 10.0

    @property
    def extend_min(self) -> float:
        return self.extend[0]

    @property
    def extend_max(self) -> float:
        return self.extend[1]


@dataclass(frozen=True)
class FirewallConfig:
    backend: str = "iptables"
    hooks: tuple[str, ...] = ("INPUT", "FORWARD")
    chain: str = "BANPIPE"
    set_v4: str = "banpipe4"
    set_v6: str = "banpipe6"
    table: str = "banpipe"
    log: bool = False
    log_prefix: str = "banpipe: "
    log_rate: str = "6/minute"
    conntrack_flush: bool = False
    ipv6: bool = True
    max_entries: int = 1_048_576

    def settings(self) -> Any:
        """The backend-facing settings (banpipe.firewall.FirewallSettings)."""
        from dataclasses import fields as dataclass_fields

        from banpipe.firewall import FirewallSettings

        names = [f.name for f in dataclass_fields(FirewallSettings)]
        return FirewallSettings(**{name: getattr(self, name) for name in names})


@dataclass(frozen=True)
class BanctlConfig:
    ledger: str = "/var/lib/banpipe/ledger.sqlite3"
    check_interval: float = 60.0


@dataclass(frozen=True)
class PagesConfig:
    """banctl apply keeps static HTML pages in ``dir`` current (None: no pages)."""

    dir: str | None = None
    interval: float = 10.0


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus textfile for node_exporter (None: no metrics)."""

    textfile: str | None = None
    interval: float = 15.0


@dataclass(frozen=True)
class FasttailConfig:
    # Syslog program tags whose messages may be alerts (banpipe.parsers.syslog.RELAY_TAGS).
    relay_tags: tuple[str, ...] = ("snort", "suricata", "barnyard2", "sagan")


@dataclass(frozen=True)
class WanwatchConfig:
    interface: str | None = None
    exec: tuple[str, ...] = ()


@dataclass(frozen=True)
class FleetConfig:
    """banshare: share ban decisions with other gateways through NATS JetStream."""

    servers: tuple[str, ...] = ()
    name: str = ""  # this gateway in the fleet; "" = the short hostname
    stream: str = "BANPIPE"
    accept: tuple[str, ...] = ("automated", "manual")  # remote ban kinds applied here
    max_duration: float = 0.0  # cap on a remote ban's duration here; 0 = no cap
    keep: float = 30 * 86400.0  # the stream keeps decisions this long (new gateways replay)
    replicas: int = 1  # stream replicas in a JetStream cluster (3 for a 3-node cluster)
    credentials: str = ""  # NATS .creds file
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""


def _nats_url(value: Any) -> str:
    text = _str(value).strip()
    if not re.fullmatch(r"(nats|tls)://[^\s/]+", text):
        raise ValueError(f"expected a URL like nats://host:4222 or tls://host:4222, got {value!r}")
    return text


def _token(value: Any) -> str:
    # One NATS subject token and durable name: no dots, spaces or wildcards.
    text = _str(value)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise ValueError(f"expected letters, digits, '_' or '-' (at most 64), got {value!r}")
    return text


def _gateway_name(value: Any) -> str:
    return "" if value == "" else _token(value)


def _replicas(value: Any) -> int:
    n = _int(value)
    if not 1 <= n <= 5:
        raise ValueError(f"expected 1 to 5, got {n}")
    return n


SCHEMA: dict[str, tuple[type, dict[str, Callable[[Any], Any]]]] = {
    "network": (
        NetworkConfig,
        {
            "wan": _list_of(parse_address),
            "wan_state": _str,
            "networks": _list_of(parse_network),
            "gateways": _list_of(parse_address),
        },
    ),
    "filter": (
        FilterConfig,
        {
            "whitelist": _list_of(parse_network),
            "whitelist_files": _list_of(_str),
            "ignore": _list_of(parse_rule_pattern),
            "priorities": _list_of(_int),
            "no_priority": _choice("skip", "act"),
            "reverse_markers": _list_of(_str),
            "require_ours": _bool,
            "flow_window": parse_duration,
        },
    ),
    "ban": (
        BanConfig,
        {
            "base": parse_duration,
            "extend": _duration_pair,
            "max": parse_duration,
            "recidive_window": parse_duration,
            "recidive_factor": _number,
            "retention": parse_duration,
            "on_stop": _choice("remove", "keep"),
            "spoof_max": _int,
            "spoof_window": parse_duration,
        },
    ),
    "firewall": (
        FirewallConfig,
        {
            "backend": _choice("iptables", "ipset", "nftables", "null"),
            "hooks": _list_of(_hook),
            "chain": _chain_name,
            "set_v4": _chain_name,
            "set_v6": _chain_name,
            "table": _chain_name,
            "log": _bool,
            "log_prefix": _str,
            "log_rate": _log_rate,
            "conntrack_flush": _bool,
            "ipv6": _bool,
            "max_entries": _int,
        },
    ),
    "banctl": (
        BanctlConfig,
        {"ledger": _str, "check_interval": parse_duration},
    ),
    "fasttail": (
        FasttailConfig,
        {"relay_tags": _list_of(_str)},
    ),
    "wanwatch": (
        WanwatchConfig,
        {"interface": _str, "exec": _list_of(_str)},
    ),
    "pages": (PagesConfig, {"dir": _str, "interval": parse_duration}),
    "metrics": (MetricsConfig, {"textfile": _str, "interval": parse_duration}),
    "fleet": (
        FleetConfig,
        {
            "servers": _list_of(_nats_url),
            "name": _gateway_name,
            "stream": _token,
            "accept": _list_of(_choice("automated", "manual")),
            "max_duration": parse_duration,
            "keep": parse_duration,
            "replicas": _replicas,
            "credentials": _str,
            "tls_ca": _str,
            "tls_cert": _str,
            "tls_key": _str,
        },
    ),
}


@dataclass(frozen=True)
class Config:
    network: NetworkConfig = field(default_factory=NetworkConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    ban: BanConfig = field(default_factory=BanConfig)
    firewall: FirewallConfig = field(default_factory=FirewallConfig)
    banctl: BanctlConfig = field(default_factory=BanctlConfig)
    wanwatch: WanwatchConfig = field(default_factory=WanwatchConfig)
    pages: PagesConfig = field(default_factory=PagesConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    fasttail: FasttailConfig = field(default_factory=FasttailConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    path: str | None = None


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """Line numbers of ``key =`` lines per section (tomllib keeps no positions)."""
    found: dict[tuple[str, str], int] = {}
    section = ""
    header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")
    keyline = re.compile(r"^\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*=")
    for n, line in enumerate(text.splitlines(), 1):
        m = header.match(line)
        if m:
            section = m.group(1)
            found.setdefault((section, ""), n)
            continue
        m = keyline.match(line)
        if m:
            found.setdefault((section, m.group(1).strip('"')), n)
    return found


def parse_config(text: str, name: str = "<config>") -> Config:
    """Parse and validate config text; raise ConfigError naming file, line and key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        where = f"{name}:{m.group(1)}" if m else name
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(f"{where}: not valid TOML: {reason}") from None
    lines = _key_lines(text)
    sections: dict[str, Any] = {}
    for section, value in data.items():
        line = lines.get((section, ""), lines.get(("", section)))
        where = f"{name}:{line}" if line else name
        if section not in SCHEMA:
            known = ", ".join(f"[{s}]" for s in SCHEMA)
            raise ConfigError(f"{where}: unknown section [{section}] (known: {known})")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{section}' must be a [section] table")
        cls, keys = SCHEMA[section]
        converted: dict[str, Any] = {}
        for key, raw in value.items():
            kline = lines.get((section, key))
            kwhere = f"{name}:{kline}" if kline else name
            if key not in keys:
                hint = _close_match(key, keys)
                raise ConfigError(f"{kwhere}: [{section}] unknown key '{key}'{hint}")
            try:
                converted[key] = keys[key](raw)
            except ValueError as exc:
                raise ConfigError(f"{kwhere}: [{section}] {key}: {exc}") from None
        sections[section] = cls(**converted)
    return Config(**sections, path=name)


def _close_match(key: str, keys: dict[str, Any]) -> str:
    """`` (did you mean 'K'?)`` for the known key ``key`` is most likely a typo of.

    Plain difflib ranks ``no_priority`` above ``priorities`` for ``priorty``; a typo
    keeps the start of the word far more often than it drops a prefix, so a shared
    start counts extra.
    """
    import difflib

    def score(known: str) -> float:
        ratio = difflib.SequenceMatcher(None, key, known).ratio()
        prefix = len(os.path.commonprefix([key, known]))
        return ratio + 0.2 * prefix / max(len(key), 1)

    ranked = sorted(keys, key=score, reverse=True)
    if not ranked or difflib.SequenceMatcher(None, key, ranked[0]).ratio() < 0.6:
        return ""
    return f" (did you mean '{ranked[0]}'?)"


def load_config(path: str | Path | None = None) -> Config:
    """Load ``path`` (or the default path; a missing default means all defaults)."""
    explicit = path is not None
    p = Path(path) if explicit else DEFAULT_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{p}: no such file") from None
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    return parse_config(text, str(p))


def section_keys() -> dict[str, list[str]]:
    """Every section and its keys, for docs and the Ansible role's argument specs."""
    return {s: [f.name for f in fields(cls)] for s, (cls, _) in SCHEMA.items()}
