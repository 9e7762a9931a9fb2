"""Suricata EVE JSON input: banpipe.parsers.eve's mapping, and fasttail reading eve.json.

Records follow what Suricata 7/8 write (src/output-json.c CreateEveHeader,
src/output-json-alert.c AlertJsonHeader); the interleaved sample with its expected parse
is tests/samples/suricata_eve.txt/.json (run by test_parsers.test_sample).  Its first
alert (and ALERT below) is the eve.json line Wazuh's Suricata documentation shows as
captured from a sensor (ET POLICY curl User-Agent Outbound), with documentation addresses
and the ``direction``/``flow`` keys Suricata 7 adds.
"""

# EVE records are test data and read best unbroken.
# ruff: noqa: E501

from __future__ import annotations

import json
import os

import pytest

from banpipe import parsers, pipe
from banpipe.parsers import eve
from banpipe.parsers.endpoints import _canon
from test_fasttail import SNORT2, run

ALERT = {
    "timestamp": "2026-11-28T09:58:01.104233+0100",
    "flow_id": 1146468437298446,
    "in_iface": "eth0",
    "event_type": "alert",
    "src_ip": "203.0.113.7",
    "src_port": 36162,
    "dest_ip": "198.51.100.2",
    "dest_port": 80,
    "proto": "TCP",
    "pkt_src": "wire/pcap",
    "alert": {
        "action": "allowed",
        "gid": 1,
        "signature_id": 2013028,
        "rev": 7,
        "signature": "ET POLICY curl User-Agent Outbound",
        "category": "Attempted Information Leak",
        "severity": 2,
    },
    "direction": "to_server",
}
FLOW = '{"timestamp":"2026-11-28T09:58:08.000000+0100","flow_id":1,"event_type":"flow","src_ip":"203.0.113.7","dest_ip":"198.51.100.2","proto":"TCP","flow":{"alerted":true}}'


def record(**changes) -> str:
    obj = json.loads(json.dumps(ALERT))
    for key, value in changes.items():
        if key.startswith("alert_"):
            obj["alert"][key[6:]] = value
        elif value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    return json.dumps(obj, separators=(",", ":"))


def test_mapping_onto_the_contract():
    a = eve.alert(json.loads(record()), _canon)
    assert a == {
        "v": 1,
        "ts": "2026-11-28T09:58:01.104233+01:00",
        "gid": 1,
        "sid": 2013028,
        "rev": 7,
        "msg": "ET POLICY curl User-Agent Outbound",
        "classification": "Attempted Information Leak",
        "priority": 2,
        "proto": "TCP",
        "src": "203.0.113.7",
        "sport": 36162,
        "dst": "198.51.100.2",
        "dport": 80,
        "action": None,
        "refs": [],
        "format": "suricata-eve",
        "iface": "eth0",
        "flow_id": 1146468437298446,
        "direction": "to_server",
    }


@pytest.mark.parametrize(
    ("stamp", "want"),
    [
        ("2026-11-28T09:58:01.104233+0100", "2026-11-28T09:58:01.104233+01:00"),
        ("2026-11-28T09:58:01.104233-0530", "2026-11-28T09:58:01.104233-05:30"),
        ("2026-11-28T09:58:01.1+00:00", "2026-11-28T09:58:01.100000+00:00"),
        ("2026-11-28T09:58:01Z", "2026-11-28T09:58:01.000000+00:00"),
    ],
)
def test_timestamp_keeps_its_offset(stamp, want):
    assert eve.timestamp(stamp) == want


@pytest.mark.parametrize("stamp", ["2026-11-28 09:58:01", "2026-11-28T25:00:00+0000", 5, None])
def test_bad_timestamp_is_an_error(stamp):
    out = parsers.AlertParser(now=parsers.datetime(2026, 11, 28)).feed(record(timestamp=stamp), 1)
    assert out[0].reason.startswith("malformed alert: bad timestamp")


def test_other_events_are_skipped_before_decoding(monkeypatch):
    def boom(_):
        raise AssertionError("decoded")

    monkeypatch.setattr(pipe, "loads", boom)
    p = parsers.AlertParser(now=parsers.datetime(2026, 11, 28))
    assert p.feed(FLOW, 1) == []
    assert eve.skip(FLOW) and not eve.skip(record())
    # text that merely mentions an alert inside a string is not an alert event
    dns = '{"event_type":"dns","dns":{"rrname":"\\"event_type\\":\\"alert\\""}}'
    assert eve.skip(dns)


def test_blocked_is_drop_and_target_is_kept():
    a = eve.alert(
        json.loads(
            record(
                alert_action="blocked",
                alert_source={"ip": "203.0.113.7", "port": 36162},
                alert_target={"ip": "198.51.100.2", "port": 80},
            )
        ),
        _canon,
    )
    assert (a["action"], a["target"]) == ("drop", "198.51.100.2")
    assert list(a)[-4:] == ["iface", "flow_id", "direction", "target"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"src_ip": "203.0.113.256"}, "invalid address"),
        ({"dest_ip": None}, "one address missing"),
        ({"src_port": 70000}, "bad src_port"),
        ({"alert_signature_id": "1"}, "alert.signature_id missing"),
        ({"alert_signature": None}, "alert.signature missing"),
        ({"alert_target": {"ip": "192.0.2.99"}}, "alert.target"),
        ({"alert": "x"}, "no alert object"),
    ],
)
def test_bad_alert_records_are_errors_never_alerts(changes, reason):
    line = record(**changes)
    if changes.get("alert_signature", 0) is None:
        obj = json.loads(line)
        del obj["alert"]["signature"]
        line = json.dumps(obj)
    out = parsers.AlertParser(now=parsers.datetime(2026, 11, 28)).feed(line, 7)
    assert len(out) == 1 and isinstance(out[0], parsers.ParseError), out
    assert out[0].lineno == 7 and reason in out[0].reason


def test_fasttail_reads_eve_detected_and_forced(tmp_path):
    f = tmp_path / "eve.json"
    f.write_text(FLOW + "\n" + record() + "\n" + FLOW + "\n")
    code, objs, err = run("--once", f)
    assert (code, err) == (0, "")
    assert [o["format"] for o in objs] == ["suricata-eve"]
    code, objs, err = run("--once", "--format", "suricata-eve", f)
    assert (code, len(objs), err) == (0, 1, "")
    # forced: a text alert in an EVE file, and EVE in a text file, are refused
    f.write_text(record() + "\n" + SNORT2)
    code, objs, err = run("--once", "--format", "suricata-eve", f)
    assert [o["format"] for o in objs] == ["suricata-eve"]
    assert "not the forced format: looks like snort2-fast" in err
    code, objs, err = run("--once", "--format", "snort2-fast", f)
    assert [o["format"] for o in objs] == ["snort2-fast"]
    assert f"{f}:1: not the forced format: looks like suricata-eve" in err


def test_resume_and_rotation_while_stopped_with_eve(tmp_path):
    f = tmp_path / "eve.json"
    state = tmp_path / "pos.json"
    f.write_text(record(flow_id=1) + "\n" + FLOW + "\n")
    assert [o["flow_id"] for o in run("--once", "--state", state, f)[1]] == [1]
    assert run("--once", "--state", state, f)[1] == []
    with open(f, "a") as fh:
        fh.write(record(flow_id=2) + "\n")
    os.rename(f, str(f) + ".1")
    f.write_text(FLOW + "\n" + record(flow_id=3) + "\n")
    code, objs, err = run("--once", "--state", state, f)
    assert [o["flow_id"] for o in objs] == [2, 3]
    assert "rotated since the saved position" in err
    assert run("--once", "--state", state, f)[1] == []
