"""Contract tests every tool must pass, run as real processes from bin/.

Each tool: `--help` works, a bad option is a usage error (64), empty input is fine,
garbage is reported as `TOOL: PLACE:LINE: REASON`, counted, skipped, and never turns
into output on the pipe.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from toolpaths import BIN

TOOLS = ["fasttail", "alertfilter", "banctl", "wanwatch", "banshare"]


def run(tool, *args, input=b"", env=None, timeout=30):
    return subprocess.run(
        [sys.executable, str(BIN / tool), *args],
        input=input,
        capture_output=True,
        env=env,
        timeout=timeout,
    )


@pytest.mark.parametrize("tool", TOOLS)
def test_help(tool, tool_env):
    r = run(tool, "--help", env=tool_env)
    assert r.returncode == 0
    assert b"usage:" in r.stdout and tool.encode() in r.stdout


@pytest.mark.parametrize("tool", TOOLS)
def test_bad_option_is_a_usage_error(tool, tool_env):
    r = run(tool, "--no-such-option", env=tool_env)
    assert r.returncode == 64
    assert r.stdout == b""
    # one line, the tool's own shape, and where to look next
    err = r.stderr.decode()
    assert err.startswith(f"{tool}: ") and err.endswith(f" (see {tool} --help)\n")
    assert err.count("\n") == 1


@pytest.mark.parametrize("tool", TOOLS)
def test_version(tool, tool_env):
    from banpipe import __version__

    r = run(tool, "--version", env=tool_env)
    assert (r.returncode, r.stderr) == (0, b"")
    assert r.stdout.decode() == f"{tool} (banpipe) {__version__}\n"


class _Untouchable:
    """A sys.stdout/sys.stderr that fails the test when anything writes to it."""

    def write(self, text):
        raise AssertionError(f"wrote to the process's own stream: {text!r}")

    def flush(self):
        pass


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize(
    "argv, code, where",
    [(["--help"], 0, "out"), (["--version"], 0, "out"), (["--bogus"], 64, "err")],
)
def test_main_writes_help_version_and_usage_errors_to_its_own_streams(
    tool, argv, code, where, monkeypatch
):
    """In process, main() answers --help, --version and a usage error on the streams it
    is given (one way for every tool: no redirect of sys.stdout, no SystemExit)."""
    import io

    main = __import__(f"banpipe.{tool}", fromlist=["main"]).main
    monkeypatch.setattr(sys, "stdout", _Untouchable())
    monkeypatch.setattr(sys, "stderr", _Untouchable())
    out, err = io.StringIO(), io.StringIO()
    assert main(argv, stdout=out, stderr=err) == code
    text = {"out": out, "err": err}[where].getvalue()
    other = {"out": err, "err": out}[where].getvalue()
    assert other == ""
    assert text.startswith(
        {"--help": "usage: ", "--version": f"{tool} (banpipe) "}.get(argv[0], f"{tool}: ")
    )


def ledger_args(tmp_path):
    return ["--config", "/dev/null", "--ledger", str(tmp_path / "l.sqlite3"), "--backend", "null"]


@pytest.fixture
def empty_config(tmp_path):
    cfg = tmp_path / "empty.toml"
    cfg.write_text("")
    return cfg


def test_fasttail_empty_file(tmp_path, tool_env):
    f = tmp_path / "alert"
    f.write_bytes(b"")
    r = run("fasttail", "--once", "--from-start", str(f), env=tool_env)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def test_fasttail_garbage_is_reported_with_file_and_line(tmp_path, tool_env):
    f = tmp_path / "alert"
    f.write_bytes(b"\x00\x01garbage\xff\nnot an alert either\n")
    r = run("fasttail", "--once", "--from-start", str(f), env=tool_env)
    assert r.returncode == 0
    assert r.stdout == b""
    lines = r.stderr.decode().splitlines()
    assert lines[0].startswith(f"fasttail: {f}:1: ")
    assert lines[1].startswith(f"fasttail: {f}:2: ")


def test_fasttail_missing_file_with_once_is_no_input(tmp_path, tool_env):
    r = run("fasttail", "--once", str(tmp_path / "absent"), env=tool_env)
    assert r.returncode == 66
    assert r.stderr.decode().startswith("fasttail: ")


def test_alertfilter_empty_input(empty_config, tool_env):
    r = run("alertfilter", "--config", str(empty_config), env=tool_env)
    assert r.returncode == 0 and r.stdout == b""


def test_alertfilter_garbage_is_reported_with_line(empty_config, tool_env):
    r = run(
        "alertfilter",
        "--config",
        str(empty_config),
        input=b'{"v":1}\nnot json\n',
        env=tool_env,
    )
    assert r.returncode == 0 and r.stdout == b""
    err = r.stderr.decode()
    assert "alertfilter: <stdin>:1: " in err
    assert "alertfilter: <stdin>:2: not JSON" in err


def test_alertfilter_bad_config_is_78(tmp_path, tool_env):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[filter]\npriorty = [1]\n")
    r = run("alertfilter", "--config", str(cfg), env=tool_env)
    assert r.returncode == 78
    assert r.stderr.decode().startswith(f"alertfilter: {cfg}:2: [filter] unknown key 'priorty'")


def test_banctl_apply_empty_input(tmp_path, empty_config, tool_env):
    args = ["--config", str(empty_config), "--ledger", str(tmp_path / "l.db"), "--backend", "null"]
    r = run("banctl", *args, "apply", env=tool_env)
    assert r.returncode == 0 and r.stdout == b""


def test_banctl_apply_garbage_never_bans(tmp_path, empty_config, tool_env):
    args = ["--config", str(empty_config), "--ledger", str(tmp_path / "l.db"), "--backend", "null"]
    garbage = b'not json\n{"v":1,"offender":"not-an-ip"}\n{"v":1,"offender":"127.0.0.1"}\n'
    r = run("banctl", *args, "apply", input=garbage, env=tool_env)
    assert r.returncode == 0
    err = r.stderr.decode()
    assert "banctl: <stdin>:1: not JSON" in err
    assert "banctl: <stdin>:2: " in err
    assert "banctl: <stdin>:3: " in err
    listing = run("banctl", *args, "list", "--json", env=tool_env)
    assert listing.returncode == 0
    assert b"127.0.0.1" not in listing.stdout and b"not-an-ip" not in listing.stdout


def test_wanwatch_bad_config_is_78(tmp_path, tool_env):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[wanwatch]\ninterfce = 'eth0'\n")
    r = run("wanwatch", "--config", str(cfg), "--interface", "lo", "--once", env=tool_env)
    assert r.returncode == 78
    assert r.stderr.decode().startswith(f"wanwatch: {cfg}:2: [wanwatch] unknown key 'interfce'")
