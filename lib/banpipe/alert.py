"""The alert: the noun that crosses the first pipe, and the one validator of it.

Tools pass plain dicts along the pipe for speed and so unknown keys survive untouched.
This module holds the type of every alert key (:data:`KEY_TYPES`) and the validation
built from it: :func:`problem` says why an object is no valid alert (checking the keys a
consumer needs), :func:`checker` compiles the same rule into one expression for a hot
loop. Producers' output is tested with :func:`problem` over every key
(tests/test_parsers.py, tests/test_corpus.py); alertfilter applies :func:`checker` and
:func:`problem` to the keys its decision reads (:data:`JUDGED`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from banpipe.pipe import ALERT_KEYS, check_object

FORMATS = (
    "snort2-fast",
    "snort3-fast",
    "suricata-fast",
    "snort2-full",
    "snort3-full",
    "snort-syslog",
    "suricata-eve",
)

#: JSON type of each alert key (docs/pipe-format.md, boundary 1), exact: true is no int.
KEY_TYPES: dict[str, str] = {
    "v": "int",
    "ts": "str",
    "gid": "int",
    "sid": "int",
    "rev": "int",
    "msg": "str",
    "classification": "str|null",
    "priority": "int|null",
    "proto": "str|null",
    "src": "str|null",
    "sport": "int|null",
    "dst": "str|null",
    "dport": "int|null",
    "action": "str|null",
    "refs": "list[str]",
    "format": "str",
}

#: The keys alertfilter's decision reads (banpipe.rules.decide); others pass through.
JUDGED: tuple[str, ...] = ("gid", "sid", "msg", "priority", "src", "dst")

_WANT = {
    "int": "an integer",
    "int|null": "an integer or null",
    "str": "a string",
    "str|null": "a string or null",
    "list[str]": "a list of strings",
}


def _fits(value: Any, kind: str) -> bool:
    if value is None:
        return kind.endswith("|null")
    if kind.startswith("int"):
        return type(value) is int
    if kind.startswith("str"):
        return type(value) is str
    return type(value) is list and all(type(x) is str for x in value)


def problem(obj: Any, keys: tuple[str, ...] = ALERT_KEYS) -> str | None:
    """Why ``obj`` is not a valid version-1 alert as far as ``keys`` go, or None.

    The first fault found, in the words consumers report: ``missing key 'src'``,
    ``'gid' must be an integer, got a string``.
    """
    reason = check_object(obj)
    if reason is not None:
        return reason
    for key in keys:
        if key not in obj:
            return f"missing key '{key}'"
        kind = KEY_TYPES[key]
        if not _fits(obj[key], kind):
            return f"'{key}' must be {_WANT[kind]}, got {json_type(obj[key])}"
    return None


_TESTS = {
    "int": "type(o[{k!r}]) is int",
    "int|null": "type(o[{k!r}]) in _INT_NULL",
    "str": "type(o[{k!r}]) is str",
    "str|null": "type(o[{k!r}]) in _STR_NULL",
    "list[str]": "_fits(o[{k!r}], 'list[str]')",
}


def checker(keys: tuple[str, ...] = ALERT_KEYS) -> Callable[[Any], bool]:
    """``valid(obj)``: True exactly when ``problem(obj, keys)`` is None, as one compiled
    expression (a loop over the keys would cost alertfilter about a tenth of its time;
    bench/README.md). A False is then explained by :func:`problem`."""
    tests = " and ".join(_TESTS[KEY_TYPES[k]].format(k=k) for k in keys)
    source = (
        "def valid(o):\n"
        "    try:\n"
        f"        return o['v'] == 1 and {tests or 'True'}\n"
        "    except (KeyError, TypeError, IndexError):\n"
        "        return False\n"
    )
    scope: dict[str, Any] = {
        "_INT_NULL": (int, type(None)),
        "_STR_NULL": (str, type(None)),
        "_fits": _fits,
    }
    exec(source, scope)  # noqa: S102 - the text is built from KEY_TYPES only
    return scope["valid"]


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
