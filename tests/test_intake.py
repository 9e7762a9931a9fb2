"""banctl apply's intake: a plain ban request read by ``pipe.decode_ban`` (msgspec) gives
the same groups, reports and counts as the general way (``pipe.loads``, every type
checked), and ``decode_ban`` accepts only what ``loads`` reads to the same values."""

from __future__ import annotations

import io
import json
from collections import Counter

import orjson
import pytest

from banpipe import cli, pipe, positions
from banpipe.intake import Intake
from banpipe.protect import Protection
from banrequest import ban_request

msgspec = pytest.importorskip("msgspec")

# A plain request with a microsecond in its time stamp (a stamp that codes to an integer).
PLAIN = ban_request(ts="2026-11-28T10:00:00.000001")

# Each changes a plain request; the intake must treat the result as the general way does.
CHANGES = [
    {},
    {"gid": True},
    {"gid": 1.0},
    {"rev": None},
    {"rev": True},
    {"priority": None},
    {"priority": 2**63},
    {"priority": -(2**63)},
    {"victim": None},
    {"victim": 5},
    {"victim": "2001:DB8::1"},
    {"msg": "x" * 1500},
    {"msg": None},
    {"msg": "caf\u00e9 \U0001f600"},
    {"reason": None},
    {"ts": "t" * 100},
    {"ts": 12},
    {"reversed": 1},
    {"reversed": True},
    {"extra": "passed through"},
    {"offender": "198.51.100.1"},  # our WAN address: refused
    {"offender": "not an address"},
    {"offender": ""},
    {"offender": " 203.0.113.9"},
    {"v": 2},
    {"v": True},
    {"sid": 2**64 - 1},
    {"sport": None, "dport": None, "refs": None},
    {"refs": [1]},
    {"iface": "eth0", "flow_id": 5, "direction": "to_server", "target": "198.51.100.8"},
]


def _line(change: dict) -> bytes:
    obj = {**PLAIN, **change}
    return orjson.dumps(obj)


RAW = [
    b"",
    b"not json",
    b'{"v":1',
    b"[1,2]",
    _line({}).replace(b'"classification":', b'"classification":"\xff","x":'),
    _line({}).replace(b'"sport":1434', b'"sport":1e999'),
    _line({}).replace(b'"proto":"UDP"', b'"proto":"\\ud800"'),
    _line({})[:-1] + b',"z":123456789012345678901234567890}',
    _line({}).replace(b'"sport":1434', b'"sport":123456789012345678901234567890'),
    _line({}).replace(b'"offender":', b'"offender":"203.0.113.99","offender":'),
    b" " + _line({}) + b" ",
    orjson.dumps(pipe.position_record({"path": "/x", "ident": "1:2", "offset": 5})),
]


def _gathered(lines: list[bytes]) -> tuple:
    err = io.StringIO()
    counts: Counter[str] = Counter()
    intake = Intake(
        Protection(wan=["198.51.100.1"]),
        positions.Recorded({}),
        counts,
        cli.Reporter("banctl", err),
        lambda: None,
    )
    groups: dict = {}
    intake.gather(lines, 0, groups)
    return groups, list(groups), err.getvalue(), counts, intake.unit, intake.novel


def test_a_plain_request_and_the_general_way_give_the_same_groups(monkeypatch):
    # Every kind of line, twice, in an order that mixes them (the groups keep it).
    lines = [_line(c) for c in CHANGES] + RAW
    lines = lines + lines[::-1]
    read = _gathered(lines)
    monkeypatch.setattr(pipe, "decode_ban", None)
    assert read == _gathered(lines)
    groups, _, reported, counts, _, _ = read
    # the comparison covers each kind: refused, bad, passed, and a position's unit
    assert counts["refused"] == 2 and counts["bad"] > 10 and sum(g[1] for g in groups.values())


def read_alike(decode, lines: list[bytes]) -> int:
    """How many of ``lines`` the typed reader ``decode`` accepts, asserting of each that
    ``loads`` (and json) read it to the values it read, of the same types."""
    accepted = 0
    for raw in lines:
        try:
            got = decode(raw)
        except msgspec.DecodeError:
            continue
        accepted += 1
        obj = pipe.loads(raw)
        assert obj == json.loads(raw)
        fields = {k: getattr(got, k) for k in got.__struct_fields__}
        assert {**fields, **obj} == fields  # every key read, to the same value
        assert all(type(fields[k]) is type(v) for k, v in obj.items())
    return accepted


def test_decode_ban_accepts_only_what_loads_reads_alike():
    assert read_alike(pipe.decode_ban, [_line(c) for c in CHANGES] + RAW) >= 5  # the plain
