"""The pipe contract: framing, versioning, pass-through, and the Alert round trip."""

from __future__ import annotations

import io
import json
from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from banpipe import pipe
from banpipe.alert import FORMATS, Alert, AlertError, problem
from banpipe.pipe import PipeError, PipeReader, Writer, read_objects


def collect(chunks: list[bytes], finish: bool = True) -> list:
    reader = PipeReader()
    out = []
    for chunk in chunks:
        reader.feed(chunk)
        out.extend(reader.objects())
    if finish:
        reader.finish()
        out.extend(reader.objects())
    return out


def test_objects_are_read_with_their_line_numbers():
    got = collect([b'{"v":1,"a":1}\n\n{"v":1,"b":2}\n'])
    assert got == [(1, {"v": 1, "a": 1}), (3, {"v": 1, "b": 2})]


def test_a_line_split_across_reads_is_one_object():
    got = collect([b'{"v":1,"m', b'sg":"x"}', b"\n"])
    assert got == [(1, {"v": 1, "msg": "x"})]


def test_last_line_without_newline_is_read_at_the_end_only():
    reader = PipeReader()
    reader.feed(b'{"v":1}\n{"v":1,"x":2}')
    assert [n for n, _ in reader.objects()] == [1]
    reader.finish()
    assert list(reader.objects()) == [(2, {"v": 1, "x": 2})]


def test_bad_lines_are_reported_and_skipped_and_reading_goes_on():
    got = collect([b'not json\n{"v":2}\n[1]\n\xff\xfe\n{"v":1}\n'])
    assert got == [
        (1, PipeError(1, "not JSON")),
        (2, PipeError(2, "unsupported pipe version 2 (expected 1)")),
        (3, PipeError(3, "not a JSON object")),
        (4, PipeError(4, "not valid UTF-8")),
        (5, {"v": 1}),
    ]


def test_an_overlong_line_is_one_error_not_a_memory_hog():
    huge = b'{"v":1,"x":"' + b"a" * (pipe.MAX_LINE + 10)
    got = collect([huge[: len(huge) // 2], huge[len(huge) // 2 :], b'"}\n{"v":1}\n'])
    assert [type(o).__name__ for _, o in got] == ["PipeError", "dict"]
    assert got[1] == (2, {"v": 1})


def test_writer_writes_one_utf8_line_per_object_and_keeps_unknown_keys():
    buf = io.BytesIO()
    w = Writer(buf)
    w.write({"v": 1, "msg": "Dấu hiệu “x”", "future_key": {"nested": [1, None]}})
    w.flush()
    data = buf.getvalue()
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert "Dấu hiệu “x”".encode() in data  # not \u-escaped
    assert json.loads(data) == {"v": 1, "msg": "Dấu hiệu “x”", "future_key": {"nested": [1, None]}}


def test_read_objects_reads_a_whole_stream():
    got = list(read_objects(io.BytesIO(b'{"v":1,"a":1}\n{"v":1,"a":2}')))
    assert [o["a"] for _, o in got] == [1, 2]


# --- Alert -> JSON -> Alert ---------------------------------------------------------

addresses = st.one_of(
    st.none(),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
ports = st.one_of(st.none(), st.integers(0, 65535))
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)

alerts = st.builds(
    Alert,
    ts=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
    gid=st.integers(1, 1 << 20),
    sid=st.integers(0, 1 << 31),
    rev=st.integers(0, 1 << 16),
    msg=text,
    classification=st.one_of(st.none(), text),
    priority=st.one_of(st.none(), st.integers(0, 255)),
    proto=st.one_of(st.none(), st.sampled_from(["TCP", "UDP", "ICMP", "PROTO:255", "6", "eth"])),
    src=addresses,
    sport=ports,
    dst=addresses,
    dport=ports,
    action=st.one_of(st.none(), st.sampled_from(["drop", "wdrop", "would_drop"])),
    refs=st.lists(text, max_size=3).map(tuple),
    format=st.sampled_from(FORMATS),
    extra=st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda k: k not in pipe.ALERT_KEYS),
        st.one_of(st.none(), st.integers(-(2**53), 2**53), text, st.booleans()),
        max_size=3,
    ),
)


@given(alerts)
def test_alert_survives_json_and_back(alert):
    buf = io.BytesIO()
    w = Writer(buf)
    w.write(alert.to_dict())
    w.flush()
    [(lineno, obj)] = list(read_objects(io.BytesIO(buf.getvalue())))
    assert lineno == 1
    assert Alert.from_dict(obj) == alert


def test_alert_keys_come_out_in_contract_order():
    alert = Alert.from_dict(
        {
            "v": 1,
            "ts": "2026-11-28T09:58:01.104233",
            "gid": 1,
            "sid": 2003,
            "rev": 8,
            "msg": "m",
            "classification": None,
            "priority": 2,
            "proto": "UDP",
            "src": "203.0.113.7",
            "sport": 1090,
            "dst": "198.51.100.2",
            "dport": 1434,
            "action": None,
            "refs": [],
            "format": "snort2-fast",
            "zz": 1,
        }
    )
    assert list(alert.to_dict()) == [*pipe.ALERT_KEYS, "zz"]


def test_problem_names_missing_and_mistyped_keys():
    good = Alert(
        datetime(2026, 1, 1),
        1,
        2,
        3,
        "m",
        None,
        1,
        "TCP",
        "203.0.113.1",
        1,
        None,
        None,
        None,
        (),
        "snort2-fast",
    ).to_dict()
    assert problem(good) is None
    assert problem({k: v for k, v in good.items() if k not in ("sid", "src")}) == (
        "missing keys sid, src"
    )
    assert problem({**good, "priority": "2"}) == "key 'priority' has the wrong type (str)"
    assert problem({**good, "gid": True}) == "key 'gid' has the wrong type (bool)"
    try:
        Alert.from_dict({**good, "ts": "yesterday"})
    except AlertError as exc:
        assert "ISO 8601" in str(exc)
    else:
        raise AssertionError("bad ts accepted")
