"""The pipe contract: framing, versioning, pass-through, the alert round trip and validator."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banpipe import pipe
from banpipe.alert import FORMATS, JUDGED, checker, fetcher, problem
from banpipe.pipe import Lines, PipeError, PipeReader, Writer


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


def test_a_whole_stream_is_read_to_its_last_line():
    got = collect([b'{"v":1,"a":1}\n{"v":1,"a":2}'])
    assert [o["a"] for _, o in got] == [1, 2]


def test_lines_count_lines_across_chunks_and_cut_a_runaway_line():
    lines = Lines()
    assert lines.feed(b"a\nb") == ([b"a"], 0)
    assert lines.feed(b"c\n\nd") == ([b"bc", b""], 1)
    assert lines.finish() == ([b"d"], 3)
    assert lines.finish() == ([], 4)
    lines.feed(b"x" * (pipe.MAX_LINE + 10))
    [long], first = lines.feed(b"yyy\n")
    assert first == 4 and len(long) == pipe.MAX_LINE + 4  # kept MAX_LINE + 1, then 3 more


def test_a_reader_stopped_early_hands_out_the_rest_later():
    reader = PipeReader()
    reader.feed(b'{"v":1,"a":1}\n{"v":1,"a":2}\n')
    first = reader.objects()
    assert next(first) == (1, {"v": 1, "a": 1})
    assert list(reader.objects()) == [(2, {"v": 1, "a": 2})]


def test_encode_batch_writes_the_bytes_of_encode_per_object():
    objs = [{"v": 1, "msg": "Dấu"}, {"v": 1, "n": None}]
    assert pipe.encode_batch(objs) == b"".join(map(pipe.encode, objs))
    odd = [{"v": 1}, {1: "non-string key"}]  # pass-through keys json would accept
    assert pipe.encode_batch(odd) == b"".join(map(pipe.encode, odd))
    assert pipe.encode(odd[1]) == b'{"1":"non-string key"}\n'  # encode's own fallback
    assert pipe.encode_batch([]) == b""


# --- alert -> JSON -> alert, and the one validator ------------------------------------------

addresses = st.one_of(
    st.none(),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
ports = st.one_of(st.none(), st.integers(0, 65535))
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)

alerts = st.builds(
    lambda extra, **keys: {"v": 1, **{k: keys[k] for k in pipe.ALERT_KEYS[1:]}, **extra},
    ts=st.datetimes().map(lambda t: t.isoformat(timespec="microseconds")),
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
    refs=st.lists(text, max_size=3),
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
    w.write(alert)
    w.flush()
    [(lineno, obj)] = collect([buf.getvalue()])
    assert lineno == 1
    assert obj == alert
    assert list(obj)[: len(pipe.ALERT_KEYS)] == list(pipe.ALERT_KEYS)
    assert problem(obj) is None


GOOD = {
    "v": 1,
    "ts": "2026-01-01T00:00:00.000000",
    "gid": 1,
    "sid": 2,
    "rev": 3,
    "msg": "m",
    "classification": None,
    "priority": 1,
    "proto": "TCP",
    "src": "203.0.113.1",
    "sport": 1,
    "dst": None,
    "dport": None,
    "action": None,
    "refs": [],
    "format": "snort2-fast",
}


def test_problem_names_missing_and_mistyped_keys():
    assert problem(GOOD) is None
    assert problem({k: v for k, v in GOOD.items() if k not in ("sid", "src")}) == (
        "missing key 'sid'"
    )
    assert problem({**GOOD, "priority": "2"}) == (
        "'priority' must be an integer or null, got a string"
    )
    assert problem({**GOOD, "gid": True}) == "'gid' must be an integer, got a boolean"
    assert problem({**GOOD, "refs": ["a", 1]}) == "'refs' must be a list of strings, got a list"
    assert problem({**GOOD, "v": 2}) == "unsupported pipe version 2 (expected 1)"
    assert problem([GOOD]) == "not a JSON object"
    assert problem({"v": 1, "gid": 1}, ("gid",)) is None  # only the keys asked for


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=3),
    st.lists(st.one_of(st.text(max_size=2), st.integers()), max_size=2),
)


@given(
    st.dictionaries(st.sampled_from([*pipe.ALERT_KEYS, "x"]), values),
    st.sampled_from([pipe.ALERT_KEYS, JUDGED, ()]),
    st.booleans(),
)
def test_the_compiled_check_agrees_with_problem(over, keys, start_good):
    obj = {**GOOD, **over} if start_good else over
    assert checker(keys)(obj) is (problem(obj, keys) is None)
    assert checker(keys)(["not", "an", "object"]) is False
    values = fetcher(keys)(obj)
    if problem(obj, keys) is None:
        assert values == tuple(obj[k] for k in ("v", *keys))  # handed over, in order
    else:
        assert values is None


# --- boundary 2: a ban request spliced into the line as read -----------------------------

REQUEST = ("203.0.113.7", "198.51.100.8", True, "1:2003:8 prio 2 against x")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v":1,"msg":"a \\u00e9 \\"q\\"","src":"203.0.113.7","x":[1,{"y":null}]}',
        b'{ "v" : 1 , "msg" : "spaced" }',
        b'{"v":1,"dup":1,"dup":2}',
    ],
)
def test_a_ban_request_is_the_line_as_read_plus_the_four_keys(raw):
    alert = pipe.loads(raw)
    line = pipe.BanRequests().line(raw, dict(alert), *REQUEST)
    assert line.startswith(raw[:-1]) and line.endswith(b"}\n")  # the alert's bytes kept
    assert pipe.loads(line) == {**alert, **dict(zip(pipe.BAN_KEYS, REQUEST))}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v":1,"reason":"old","msg":"m"}',  # a key of ours already there: set in place
        b'{"v":1,"msg":"m"} ',  # not ending in "}": encoded anew
    ],
)
def test_a_line_that_cannot_take_a_splice_is_encoded_as_before(raw):
    alert = pipe.loads(raw)
    line = pipe.BanRequests().line(raw, alert, *REQUEST)
    assert line == pipe.encode(alert)
    assert pipe.loads(line) == {**pipe.loads(raw), **dict(zip(pipe.BAN_KEYS, REQUEST))}


def test_a_ban_request_without_victim_and_unreversed():
    requests = pipe.BanRequests()
    for _ in range(2):  # the second from the memo of texts
        line = requests.line(b'{"v":1}', {"v": 1}, "2001:db8::1", None, False, 'r "q"')
        request = {"offender": "2001:db8::1", "victim": None, "reversed": False, "reason": 'r "q"'}
        assert line == pipe.encode({"v": 1, **request})
