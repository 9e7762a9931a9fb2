"""Setting values: the converters every config key is declared with.

Each takes the TOML value (or its own output again) and returns the typed value, or
raises ValueError with the reason; banpipe.config adds the file, line and key. The
duration syntax is the one of the config file and of every command line
(``parse_duration``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from banpipe import address

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_NUMBER = re.compile(r"\d+(?:\.\d+)?\Z")


def parse_duration(value: Any, *, positive: bool = False) -> float:
    """Seconds from 90, 1.5, "90", "90s", "5m", "1h30m", "1H", "7d", "2w" (spaces ignored).

    The one duration syntax, in the config file and on every command line. Negative,
    infinite and NaN values are refused, and 0 too when ``positive``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f'expected a duration like 3600 or "1h", got {value!r}')
    if isinstance(value, str):
        text = value.strip().replace(" ", "").lower()
        if _DURATION_NUMBER.match(text):
            seconds = float(text)
        else:
            pos, seconds = 0, 0.0
            for m in _DURATION_PART.finditer(text):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
                pos = m.end()
            if not text or pos != len(text):
                raise ValueError(
                    f"not a duration: {value!r} (use seconds or e.g. '90s', '5m', '1h', '7d')"
                )
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must not be negative or infinite: {value!r}")
    if positive and seconds == 0:
        raise ValueError(f"duration must be positive: {value!r}")
    return seconds


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def list_of(item: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def convert(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {type(value).__name__}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except ValueError as exc:
                raise ValueError(f"item {i + 1}: {exc}") from None
        return tuple(out)

    convert.choices = choices_of(item)  # type: ignore[attr-defined]
    return convert


def choice(*allowed: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value

    convert.choices = allowed  # type: ignore[attr-defined]
    return convert


def choices_of(convert: Callable[[Any], Any]) -> tuple[str, ...] | None:
    """The values a ``choice`` converter (or a ``list_of`` one) allows; None for any
    other (what docs and the Ansible role's argument specs list as choices)."""
    return getattr(convert, "choices", None)


def matching(pattern: str, reason: str) -> Callable[[Any], str]:
    """A converter for strings that match ``pattern`` whole; ``reason.format(value)``
    says what else is expected."""
    fits = re.compile(pattern + r"\Z").match

    def convert(value: Any) -> str:
        if not fits(string(value)):
            raise ValueError(reason.format(value))
        return value

    return convert


def optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def parse_address(value: Any) -> str:
    """A single IPv4/IPv6 address in canonical text form (banpipe.address)."""
    addr = address.canonical(string(value).strip())
    if addr is None:
        raise ValueError(f"not an IP address: {value!r}")
    return addr


def parse_network(value: Any) -> str:
    """An address or CIDR network in canonical text form (host bits are cleared)."""
    return address.network(string(value))


_RULE_RE = re.compile(r"^(\d+):(\*|\d+(?:-\d+)?)$")


def parse_rule_pattern(value: Any) -> str:
    """``GID:SID``, ``GID:*`` or ``GID:SID-SID``."""
    text = string(value).strip()
    m = _RULE_RE.match(text)
    if not m:
        raise ValueError(f"not a rule pattern GID:SID, GID:* or GID:SID-SID: {value!r}")
    sid = m.group(2)
    if "-" in sid:
        lo, hi = sid.split("-")
        if int(lo) > int(hi):
            raise ValueError(f"empty SID range: {value!r}")
    return text


def duration_pair(value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError("expected [MIN, MAX] durations")
    lo, hi = parse_duration(value[0]), parse_duration(value[1])
    if lo > hi:
        raise ValueError("MIN is larger than MAX")
    return (lo, hi)


def int_between(lo: int, hi: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        n = integer(value)
        if not lo <= n <= hi:
            raise ValueError(f"expected {lo:,} to {hi:,}, got {n:,}")
        return n

    return convert
