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

from banpipe.convert import (
    boolean,
    choice,
    duration_pair,
    int_between,
    integer,
    list_of,
    matching,
    number,
    optional,
    parse_address,
    parse_duration,
    parse_network,
    parse_rule_pattern,
    string,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PATH = Path("/etc/banpipe/banpipe.toml")


class ConfigError(Exception):
    """A config problem; the message is complete (file, line, key, reason)."""


class SettingError(ValueError):
    """A bad value for the key ``key``; ``reason`` says why (config adds file:line)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


# The firewall backends, each a module of banpipe.firewall (banpipe.firewall.make_backend).
BACKENDS = ("iptables", "ipset", "nftables", "null")
# iptables filter-table built-in chains we may hook, and their nftables hook names.
HOOKS = {"INPUT": "input", "FORWARD": "forward", "OUTPUT": "output"}
MAX_ENTRIES = 1 << 28  # ipset's maxelem is 32 bits; 268 million is beyond any gateway

_name = matching(r"[A-Za-z][A-Za-z0-9_-]{0,27}", "not a usable chain/set/table name: {!r}")
_nats_url_text = matching(
    r"(nats|tls)://[^\s/]+", "expected a URL like nats://host:4222 or tls://host:4222, got {!r}"
)
# One NATS subject token and durable name: no dots, spaces or wildcards.
_token = matching(
    r"[A-Za-z0-9_-]{1,64}", "expected letters, digits, '_' or '-' (at most 64), got {!r}"
)


def _chain(value: Any) -> str:
    text = _name(value)
    if text in HOOKS or text in ("PREROUTING", "POSTROUTING"):
        raise ValueError(f"{text!r} is a built-in chain")
    return text


def _hooks(value: Any) -> tuple[str, ...]:
    hooks = list_of(choice(*HOOKS))(value)
    if not hooks:
        raise ValueError("at least one hook is needed")
    if len(set(hooks)) != len(hooks):
        raise ValueError("a hook is listed twice")
    return hooks


_hooks.choices = tuple(HOOKS)  # type: ignore[attr-defined]  # see convert.choices_of


def _nats_url(value: Any) -> str:
    return _nats_url_text(string(value).strip())


def _gateway_name(value: Any) -> str:
    return "" if value == "" else _token(value)


# --- sections: each key declared once, with its default and its converter ---------------


def setting(default: Any, convert: Callable[[Any], Any]) -> Any:
    """A section key: its default and the converter every value passes, at load time."""
    return field(default=default, metadata={"convert": convert})


class _Section:
    """Converts every key on construction (so a section is valid however it is made)
    and raises SettingError naming the key; :meth:`_check` adds rules across keys."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if type(value) is type(f.default) and value == f.default:
                continue  # defaults are valid (and None may stand for "off")
            try:
                value = f.metadata["convert"](value)
            except ValueError as exc:
                raise SettingError(f.name, str(exc)) from None
            object.__setattr__(self, f.name, value)
        self._check()

    def _check(self) -> None:
        pass


@dataclass(frozen=True)
class NetworkConfig(_Section):
    """Who "we" are: never banned; with require_ours, only alerts against us count."""

    wan: tuple[str, ...] = setting((), list_of(parse_address))
    wan_state: str = setting("/run/banpipe/wan.json", string)
    networks: tuple[str, ...] = setting((), list_of(parse_network))
    gateways: tuple[str, ...] = setting((), list_of(parse_address))


@dataclass(frozen=True)
class FilterConfig(_Section):
    whitelist: tuple[str, ...] = setting((), list_of(parse_network))
    whitelist_files: tuple[str, ...] = setting((), list_of(string))
    ignore: tuple[str, ...] = setting((), list_of(parse_rule_pattern))
    priorities: tuple[int, ...] = setting((), list_of(integer))  # empty: every priority
    no_priority: str = setting("skip", choice("skip", "act"))
    reverse_markers: tuple[str, ...] = setting(("BLOCKED DESTINATION",), list_of(string))
    require_ours: bool = setting(True, boolean)
    # drop repeat bans of one flow_id within this; 0: off
    flow_window: float = setting(0.0, parse_duration)


def ban_problems(
    base: float, extend: tuple[float, float], max: float, recidive_factor: float
) -> list[tuple[str, str]]:
    """(key, reason) for each rule across the [ban] durations that the values break."""
    problems = []
    if not base > 0:
        problems.append(("base", "must be more than 0"))
    if not 0 <= extend[0] <= extend[1]:
        problems.append(("extend", "need 0 <= MIN <= MAX"))
    if max < base:
        problems.append(("max", "must not be less than base"))
    if not recidive_factor >= 1:
        problems.append(("recidive_factor", "must be at least 1"))
    return problems


@dataclass(frozen=True)
class BanConfig(_Section):
    base: float = setting(3600.0, parse_duration)
    extend: tuple[float, float] = setting((300.0, 1800.0), duration_pair)
    max: float = setting(7 * 86400.0, parse_duration)
    recidive_window: float = setting(30 * 86400.0, parse_duration)
    recidive_factor: float = setting(2.0, number)
    retention: float = setting(30 * 86400.0, parse_duration)
    on_stop: str = setting("remove", choice("remove", "keep"))
    spoof_max: int = setting(500, integer)
    spoof_window: float = setting(10.0, parse_duration)
    # Bans that aggregate (banpipe.escalate): this many IPv6 addresses of one prefix
    # banned within the window ban the prefix; 0: off.
    escalate_count: int = setting(0, int_between(0, 1 << 20))
    escalate_prefix: int = setting(64, int_between(16, 127))
    escalate_window: float = setting(3600.0, parse_duration)

    def _check(self) -> None:
        for name, reason in ban_problems(self.base, self.extend, self.max, self.recidive_factor):
            raise SettingError(name, reason)

    @property
    def extend_min(self) -> float:
        return self.extend[0]

    @property
    def extend_max(self) -> float:
        return self.extend[1]


@dataclass(frozen=True)
class FirewallConfig(_Section):
    """The backend and what it creates; the backends take this section as it is."""

    backend: str = setting("iptables", choice(*BACKENDS))
    hooks: tuple[str, ...] = setting(("INPUT", "FORWARD"), _hooks)
    chain: str = setting("BANPIPE", _chain)
    set_v4: str = setting("banpipe4", _name)
    set_v6: str = setting("banpipe6", _name)
    table: str = setting("banpipe", _name)
    log: bool = setting(False, boolean)
    # iptables limits LOG prefixes to 29 characters; quotes, backslashes and control
    # characters would break the restore/nft script quoting, so they are refused outright.
    log_prefix: str = setting(
        "banpipe: ",
        matching(
            r"[A-Za-z0-9 _.:=+,/@#%-]{0,29}",
            "expected at most 29 letters, digits, spaces or _.:=+,/@#%-, got {!r}",
        ),
    )
    log_rate: str = setting(
        "6/minute",
        matching(
            r"[1-9][0-9]{0,5}/(second|minute|hour|day)", 'expected a rate like "6/minute", got {!r}'
        ),
    )
    conntrack_flush: bool = setting(False, boolean)
    ipv6: bool = setting(True, boolean)
    # Entries per set (per address family): ipset's maxelem, the nftables sets' size.
    max_entries: int = setting(1_048_576, int_between(1, MAX_ENTRIES))

    def _check(self) -> None:
        if self.set_v4 == self.set_v6:
            raise SettingError("set_v6", f"must differ from set_v4 ({self.set_v4!r})")


@dataclass(frozen=True)
class BanctlConfig(_Section):
    ledger: str = setting("/var/lib/banpipe/ledger.sqlite3", string)
    check_interval: float = setting(60.0, parse_duration)


@dataclass(frozen=True)
class PagesConfig(_Section):
    """banctl apply keeps static HTML pages in ``dir`` current (None: no pages)."""

    dir: str | None = setting(None, optional(string))
    interval: float = setting(10.0, parse_duration)


@dataclass(frozen=True)
class MetricsConfig(_Section):
    """Prometheus textfile for node_exporter (None: no metrics)."""

    textfile: str | None = setting(None, optional(string))
    interval: float = setting(15.0, parse_duration)


@dataclass(frozen=True)
class FasttailConfig(_Section):
    # Syslog program tags whose messages may be alerts (banpipe.parsers.syslog.RELAY_TAGS).
    relay_tags: tuple[str, ...] = setting(
        ("snort", "suricata", "barnyard2", "sagan"), list_of(string)
    )


@dataclass(frozen=True)
class WanwatchConfig(_Section):
    interface: str | None = setting(None, optional(string))
    exec: tuple[str, ...] = setting((), list_of(string))


@dataclass(frozen=True)
class FleetConfig(_Section):
    """banshare: share ban decisions with other gateways through NATS JetStream."""

    servers: tuple[str, ...] = setting((), list_of(_nats_url))
    name: str = setting("", _gateway_name)  # this gateway in the fleet; "" = the short hostname
    stream: str = setting("BANPIPE", _token)
    # remote ban kinds applied here
    accept: tuple[str, ...] = setting(
        ("automated", "manual"), list_of(choice("automated", "manual"))
    )
    max_duration: float = setting(0.0, parse_duration)  # cap on a remote ban here; 0 = no cap
    keep: float = setting(30 * 86400.0, parse_duration)  # the stream keeps decisions this long
    replicas: int = setting(
        1, int_between(1, 5)
    )  # stream replicas in a JetStream cluster (3 for 3 nodes)
    credentials: str = setting("", string)  # NATS .creds file
    tls_ca: str = setting("", string)
    tls_cert: str = setting("", string)
    tls_key: str = setting("", string)


SECTIONS: dict[str, type] = {
    "network": NetworkConfig,
    "filter": FilterConfig,
    "ban": BanConfig,
    "firewall": FirewallConfig,
    "banctl": BanctlConfig,
    "fasttail": FasttailConfig,
    "wanwatch": WanwatchConfig,
    "pages": PagesConfig,
    "metrics": MetricsConfig,
    "fleet": FleetConfig,
}
# Section -> (class, key -> converter), derived from the declarations above.
SCHEMA: dict[str, tuple[type, dict[str, Callable[[Any], Any]]]] = {
    name: (cls, {f.name: f.metadata["convert"] for f in fields(cls)})
    for name, cls in SECTIONS.items()
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

        def at(k: str, section: str = section) -> str:
            kline = lines.get((section, k))
            return f"{name}:{kline}" if kline else name

        for k in value:
            if k not in keys:
                hint = _close_match(k, keys)
                raise ConfigError(f"{at(k)}: [{section}] unknown key '{k}'{hint}")
        try:
            sections[section] = cls(**value)
        except SettingError as exc:
            # A rule across keys names the key it is about; a key the file leaves out
            # (its default) is placed at the section header.
            place = at(exc.key) if exc.key in value else at("")
            raise ConfigError(f"{place}: [{section}] {exc.key}: {exc.reason}") from None
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
