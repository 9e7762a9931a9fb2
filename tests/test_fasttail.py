"""fasttail's main() with injected streams and temporary files (no inotify here).

Following, rotation and restarts with real processes are in tests/test_follow.py.
"""

from __future__ import annotations

import io
import json
import os
from datetime import datetime

import pytest

from banpipe import fasttail
from banpipe.positions import Position

SNORT2 = (
    "11/17-10:46:59.686494  [**] [1:2402000:5001] ET DROP Dshield Block Listed Source "
    "group 1 [**] [Classification: Misc Attack] [Priority: 2] {TCP} "
    "176.119.4.18:52626 -> 10.128.0.7:4425\n"
)
SURICATA = (
    "11/17/2018-10:46:59.686494  [**] [1:2402000:5001] ET DROP Dshield Block Listed Source "
    "group 1 [**] [Classification: Misc Attack] [Priority: 2] {TCP} "
    "176.119.4.18:52626 -> 10.128.0.7:4425\n"
)
FULL_BLOCK = (
    "[**] [1:2011716:4] ET SCAN Sipvicious User-Agent Detected (friendly-scanner) [**]\n"
    "[Classification: Attempted Information Leak] [Priority: 2] \n"
    "11/17-10:29:11.303954 148.72.169.215:5396 -> 10.128.0.4:5060\n"
    "UDP TTL:52 TOS:0x0 ID:0 IpLen:20 DgmLen:441 DF\n"
    "Len: 413\n"
    "[Xref => http://doc.emergingthreats.net/2011716][Xref => http://blog.sipvicious.org/]\n"
    "\n"
)
NOW = datetime(2026, 11, 28, 12, 0, 0)


def line(n: int) -> str:
    """A distinct Snort 2 alert_fast line; sid == n identifies it in the output."""
    return (
        f"11/17-10:46:59.{n % 1000000:06d}  [**] [1:{n}:1] test alert {n} [**] "
        f"[Priority: 2] {{TCP}} 192.0.2.1:1234 -> 198.51.100.2:80\n"
    )


def run(*argv, stdin: bytes = b"", now=NOW):
    out, err = io.BytesIO(), io.StringIO()
    code = fasttail.main(
        [str(a) for a in argv], stdin=io.BytesIO(stdin), stdout=out, stderr=err, clock=now.timestamp
    )
    objs = [json.loads(x) for x in out.getvalue().splitlines()]
    return code, objs, err.getvalue()


@pytest.fixture
def alert_file(tmp_path):
    def make(text: str | bytes, name: str = "alert"):
        p = tmp_path / name
        p.write_bytes(text.encode() if isinstance(text, str) else text)
        return p

    return make


# -- usage -----------------------------------------------------------------------------


def test_help_goes_to_stdout_and_exits_0():
    out, err = io.StringIO(), io.StringIO()
    assert fasttail.main(["--help"], stdout=out, stderr=err) == 0
    assert out.getvalue().startswith("usage: fasttail")
    assert "--state FILE" in out.getvalue()
    assert err.getvalue() == ""


def test_help_on_a_binary_stdout():
    out = io.BytesIO()
    assert fasttail.main(["--help"], stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue().startswith(b"usage: fasttail")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus", "x"], "unrecognized arguments: --bogus"),
        ([], "the following arguments are required: FILE"),
        (["--format", "nope", "x"], "argument --format: invalid choice: 'nope'"),
        (["--year", "twenty", "x"], "argument --year: invalid int value: 'twenty'"),
        (["--year", "0", "x"], "argument --year: 0 is not a year"),
        (["--state", "s", "-"], "--state needs a file, not standard input"),
    ],
)
def test_usage_errors_exit_64(argv, message):
    code, objs, err = run(*argv)
    assert code == 64
    assert objs == []
    assert err.splitlines()[-1].startswith(f"fasttail: {message}")


# -- reading ---------------------------------------------------------------------------


def test_once_reads_the_whole_file(alert_file):
    f = alert_file(SNORT2 + SURICATA)
    code, objs, err = run("--once", f)
    assert (code, err) == (0, "")
    assert objs == [
        {
            "v": 1,
            "ts": "2026-11-17T10:46:59.686494",
            "gid": 1,
            "sid": 2402000,
            "rev": 5001,
            "msg": "ET DROP Dshield Block Listed Source group 1",
            "classification": "Misc Attack",
            "priority": 2,
            "proto": "TCP",
            "src": "176.119.4.18",
            "sport": 52626,
            "dst": "10.128.0.7",
            "dport": 4425,
            "action": None,
            "refs": [],
            "format": "snort2-fast",
        },
        dict(objs[0], ts="2018-11-17T10:46:59.686494", format="suricata-fast"),
    ]
    assert list(objs[0]) == list(objs[1])  # pipe-contract key order


def test_once_with_from_start_is_the_same(alert_file):
    f = alert_file(SNORT2 * 3)
    assert run("--once", "--from-start", f)[1] == run("--once", f)[1]


def test_empty_file_writes_nothing(alert_file):
    assert run("--once", alert_file("")) == (0, [], "")


def test_standard_input(alert_file):
    code, objs, err = run("-", stdin=(SNORT2 + SURICATA).encode())
    assert (code, len(objs), err) == (0, 2, "")


def test_empty_standard_input():
    assert run("-") == (0, [], "")


def test_year_overrides_the_inferred_year(alert_file):
    f = alert_file(SNORT2)
    assert run("--once", f)[1][0]["ts"] == "2026-11-17T10:46:59.686494"
    assert run("--once", "--year", "2019", f)[1][0]["ts"] == "2019-11-17T10:46:59.686494"


def test_yearless_time_in_the_future_means_last_year(alert_file):
    f = alert_file(SNORT2)
    code, objs, _ = run("--once", f, now=datetime(2026, 1, 5))
    assert objs[0]["ts"] == "2025-11-17T10:46:59.686494"


def test_format_forces_one_format(alert_file):
    f = alert_file(SNORT2 + SURICATA)
    code, objs, err = run("--once", "--format", "suricata-fast", f)
    assert code == 0
    assert [o["format"] for o in objs] == ["suricata-fast"]
    assert err.splitlines() == [
        f"fasttail: {f}:1: not the forced format: looks like snort2-fast",
        f"fasttail: {f}: 1 line skipped (1 not the forced format)",
    ]


def test_full_block_and_crlf_and_no_final_newline(alert_file):
    text = FULL_BLOCK.replace("\n", "\r\n") + FULL_BLOCK.rstrip("\n")
    code, objs, err = run("--once", alert_file(text))
    assert (code, err) == (0, "")
    assert [o["refs"] for o in objs] == [
        ["http://doc.emergingthreats.net/2011716", "http://blog.sipvicious.org/"]
    ] * 2
    assert objs[0]["src"] == "148.72.169.215" and objs[0]["format"] == "snort2-full"


def test_last_line_without_newline_is_read_with_once(alert_file):
    code, objs, err = run("--once", alert_file(SNORT2 + SNORT2.rstrip("\n")))
    assert (code, len(objs), err) == (0, 2, "")


# -- bad input -------------------------------------------------------------------------


def test_garbage_is_reported_counted_and_skipped(alert_file):
    f = alert_file(
        b"hello world\n" + SNORT2.encode() + b"\x00\x01garbage\xff\n\n# comment\n"
        b"11/17-10:46:59.686494  [**] [1:2:3] broken [**] {TCP} 1.2.3:4 -> 5.6.7.8:9\n"
    )
    code, objs, err = run("--once", f)
    assert code == 0
    assert [o["sid"] for o in objs] == [2402000]
    assert err.splitlines() == [
        f"fasttail: {f}:1: not an alert",
        f"fasttail: {f}:3: binary data",
        f"fasttail: {f}:6: malformed alert: invalid address 1.2.3",
        f"fasttail: {f}: 3 lines skipped (1 not an alert, 1 binary data, 1 malformed alert)",
    ]


def test_over_long_line_is_cut_off_and_reported(alert_file):
    f = alert_file("x" * 200_000 + "\n" + SNORT2)
    code, objs, err = run("--once", f)
    assert (code, len(objs)) == (0, 1)
    assert err.splitlines() == [
        f"fasttail: {f}:1: line too long",
        f"fasttail: {f}: 1 line skipped (1 line too long)",
    ]


def test_binary_file_never_makes_up_an_alert(alert_file):
    data = bytes(range(256)) * 64 + SNORT2.encode()[:60] + b"\x00" + SNORT2.encode()[60:]
    code, objs, err = run("--once", alert_file(data))
    assert code == 0 and objs == []
    assert "skipped" in err.splitlines()[-1]


def test_half_block_at_the_end_is_reported_not_invented(alert_file):
    f = alert_file(FULL_BLOCK.splitlines(keepends=True)[0])
    code, objs, err = run("--once", f)
    assert (code, objs) == (0, [])
    assert err.splitlines()[0] == (f"fasttail: {f}:1: incomplete alert block: no time stamp line")


# -- exit codes ------------------------------------------------------------------------


def test_missing_file_with_once_is_66(tmp_path):
    f = tmp_path / "absent"
    assert run("--once", f) == (66, [], f"fasttail: {f}: No such file or directory\n")


def test_unreadable_file_is_66(tmp_path):
    code, objs, err = run("--once", tmp_path)  # a directory: cannot be read as a file
    assert (code, objs, err) == (66, [], f"fasttail: {tmp_path}: Is a directory\n")


def test_a_fifo_is_not_followed_as_a_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, objs, err = run("--once", fifo)
    assert (code, objs) == (66, [])
    assert err == f"fasttail: {fifo}: not a regular file (use - for a pipe)\n"


def test_unwritable_state_is_73(alert_file, tmp_path):
    f = alert_file(SNORT2)
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    state = blocker / "state.json"  # parent is not a directory
    code, objs, err = run("--once", "--state", state, f)
    assert code == 73
    assert objs == []
    assert err.startswith(f"fasttail: {state}: cannot write state: ")


# -- --state with --once ---------------------------------------------------------------


def test_state_resumes_where_the_last_run_stopped(alert_file, tmp_path):
    f = alert_file("".join(line(n) for n in range(1, 4)))
    state = tmp_path / "pos.json"
    assert [o["sid"] for o in run("--once", "--state", state, f)[1]] == [1, 2, 3]
    saved = Position.from_json(json.loads(state.read_text()))
    st = os.stat(f)
    assert (saved.inode, saved.offset, saved.lineno, saved.path) == (
        st.st_ino,
        st.st_size,
        3,
        str(f),
    )
    assert run("--once", "--state", state, f) == (0, [], "")
    with open(f, "a") as fh:
        fh.write(line(4) + "garbage\n" + line(5))
    code, objs, err = run("--once", "--state", state, f)
    assert [o["sid"] for o in objs] == [4, 5]
    assert err.splitlines()[0] == f"fasttail: {f}:5: not an alert"  # line numbers go on


def test_state_never_points_inside_a_pending_block(alert_file, tmp_path):
    # Without --once the open block would be held; check the saved offset directly.
    from banpipe.cursor import Cursor
    from banpipe.parsers import AlertParser

    data = (SNORT2 + FULL_BLOCK[: FULL_BLOCK.index("UDP")]).encode()
    c = Cursor(AlertParser(now=NOW), name="x")
    items = c.feed(data)
    assert len(items) == 1
    assert c.committed() == (len(SNORT2.encode()), 1)


def test_state_file_that_is_not_json_is_replaced(alert_file, tmp_path):
    f = alert_file(SNORT2)
    state = tmp_path / "pos.json"
    state.write_text("{not json")
    code, objs, err = run("--once", "--state", state, f)
    assert (code, len(objs)) == (0, 1)
    assert err.startswith(f"fasttail: {state}: not a saved position (")
    assert Position.from_json(json.loads(state.read_text())).offset == len(SNORT2)


def test_file_truncated_since_the_saved_position_is_read_from_the_start(alert_file, tmp_path):
    f = alert_file(line(1) + line(2))
    state = tmp_path / "pos.json"
    run("--once", "--state", state, f)
    with open(f, "r+") as fh:  # same inode, new content
        fh.truncate(0)
        fh.write(line(3))
    code, objs, err = run("--once", "--state", state, f)
    assert [o["sid"] for o in objs] == [3]
    assert err == (
        f"fasttail: {f}: truncated or rewritten since the saved position; reading from the start\n"
    )


def test_rotation_while_stopped_drains_the_old_file_first(alert_file, tmp_path):
    f = alert_file(line(1))
    state = tmp_path / "pos.json"
    run("--once", "--state", state, f)
    with open(f, "a") as fh:
        fh.write(line(2))
    os.rename(f, str(f) + ".1")
    alert_file(line(3))
    code, objs, err = run("--once", "--state", state, f)
    assert [o["sid"] for o in objs] == [2, 3]
    assert err.splitlines()[0] == (
        f"fasttail: {f}: rotated since the saved position; reading the rest of {f}.1"
    )
    assert run("--once", "--state", state, f)[1] == []


def test_copytruncate_while_stopped_finds_the_copy_by_fingerprint(alert_file, tmp_path):
    f = alert_file(line(1))
    state = tmp_path / "pos.json"
    run("--once", "--state", state, f)
    with open(f, "a") as fh:
        fh.write(line(2))
    (tmp_path / "alert-20261128").write_bytes(f.read_bytes())  # the copy: a new inode
    with open(f, "r+") as fh:
        fh.truncate(0)
        fh.write(line(3))
    code, objs, err = run("--once", "--state", state, f)
    assert [o["sid"] for o in objs] == [2, 3]


def _rotate_numbered(f, keep: int = 5, compress_from: int | None = None) -> None:
    """logrotate's rename scheme: alert.4 -> alert.5, ..., alert -> alert.1."""
    d, base = os.path.split(f)
    for n in range(keep, 0, -1):
        for suffix in ("", ".gz"):
            src = os.path.join(d, f"{base}.{n}{suffix}")
            if os.path.exists(src):
                os.rename(src, os.path.join(d, f"{base}.{n + 1}{suffix}"))
    os.rename(f, f"{f}.1")
    if compress_from is not None:
        for n in range(compress_from, keep + 2):
            plain = os.path.join(d, f"{base}.{n}")
            if os.path.exists(plain):
                os.rename(plain, plain + ".gz")  # the bytes do not matter here


@pytest.mark.parametrize("rotations", [2, 3, 5])
def test_several_rotations_while_stopped_read_every_file_oldest_first(
    alert_file, tmp_path, rotations
):
    f = alert_file(line(1))
    state = tmp_path / "pos.json"
    run("--once", "--state", state, f)
    with open(f, "a") as fh:
        fh.write(line(2))
    for r in range(rotations):
        _rotate_numbered(str(f))
        alert_file(line(10 + r))
    code, objs, err = run("--once", "--state", state, f)
    assert code == 0, err
    assert [o["sid"] for o in objs] == [2, *range(10, 10 + rotations)]
    assert run("--once", "--state", state, f)[1] == []


def test_dated_rotations_while_stopped_are_read_oldest_first(alert_file, tmp_path):
    f = alert_file(line(1))
    state = tmp_path / "pos.json"
    run("--once", "--state", state, f)
    os.rename(f, tmp_path / "alert-20261126")
    for day, sid in ((27, 5), (28, 6)):
        alert_file(line(sid))
        os.utime(f, ns=(day * 10**9, day * 10**9))
        os.rename(f, tmp_path / f"alert-202611{day}")
    alert_file(line(7))
    (tmp_path / "alert_full").write_text(line(99))  # a neighbour, not a rotation
    os.utime(tmp_path / "alert-20261126", ns=(26 * 10**9, 26 * 10**9))
    code, objs, err = run("--once", "--state", state, f)
    assert [o["sid"] for o in objs] == [5, 6, 7], err


def test_compressed_rotations_while_stopped_are_reported(alert_file, tmp_path):
    f = alert_file(line(1))
    state = tmp_path / "pos.json"
    run("--once", "--state", state, f)
    with open(f, "a") as fh:
        fh.write(line(2))
    for r in range(3):
        _rotate_numbered(str(f), compress_from=2)
        alert_file(line(10 + r))
    # alert.1 (sid 11), alert.2.gz (sid 10), alert.3.gz (the saved file, compressed away)
    code, objs, err = run("--once", "--state", state, f)
    assert code == 0
    assert f"fasttail: {f}.3.gz: compressed rotation, may hold the saved position: not read" in err
    assert f"fasttail: {f}.2.gz: compressed rotation, may hold the saved position: not read" in err
