"""The alert: the noun that crosses the first pipe, and the one validator of it.

Tools pass plain dicts along the pipe for speed and so unknown keys survive untouched.
This module holds the type of every alert key (:data:`KEY_TYPES`) and the validation
built from it: :func:`problem` says why an object is no valid alert (checking the keys a
consumer needs), :func:`fetcher` compiles the same rule into one expression for a hot
loop that also hands over the values checked. Producers' output is tested with
:func:`problem` over every key (tests/test_parsers.py, tests/test_corpus.py);
alertfilter applies :func:`fetcher` and :func:`problem` to the keys its decision reads
(:data:`JUDGED`) of any line that :data:`banpipe.pipe.decode_alert` (every key typed
as :data:`KEY_TYPES` says) refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any

from banpipe.pipe import ALERT_KEYS, check_object, decoded_keys

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
    "int": "type({v}) is int",
    "int|null": "type({v}) in _INT_NULL",
    "str": "type({v}) is str",
    "str|null": "type({v}) in _STR_NULL",
    "list[str]": "_fits({v}, 'list[str]')",
}


def fetcher(keys: tuple[str, ...] = ALERT_KEYS) -> Callable[[Any], tuple[Any, ...] | None]:
    """``values(obj)``: ``obj``'s values of ``("v", *keys)`` exactly when
    ``problem(obj, keys)`` is None, else None; one compiled expression over one
    ``itemgetter`` call (a loop over the keys would cost alertfilter about a tenth of
    its time; bench/README.md), so a consumer validates and reads what it judges in
    one go. A None is then explained by :func:`problem`."""
    names = [f"_{i}" for i in range(len(keys) + 1)]
    tests = "".join(f" and {_TESTS[KEY_TYPES[k]].format(v=f'_{i}')}" for i, k in enumerate(keys, 1))
    got = "(_get(o),)" if not keys else "_get(o)"
    source = (
        "def values(o):\n"
        "    try:\n"
        f"        got = {got}\n"
        "    except (KeyError, TypeError, IndexError):\n"
        "        return None\n"
        f"    {', '.join(names)}, = got\n"
        f"    return got if _0 == 1{tests} else None\n"
    )
    scope: dict[str, Any] = {
        "_get": itemgetter(*decoded_keys(("v", *keys))),
        "_INT_NULL": (int, type(None)),
        "_STR_NULL": (str, type(None)),
        "_fits": _fits,
    }
    exec(source, scope)  # noqa: S102 - the text is built from KEY_TYPES only
    return scope["values"]


def checker(keys: tuple[str, ...] = ALERT_KEYS) -> Callable[[Any], bool]:
    """``valid(obj)``: True exactly when ``problem(obj, keys)`` is None."""
    values = fetcher(keys)
    return lambda obj: values(obj) is not None


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
