"""The README's quick start and ad-hoc pipe, run in a fresh copy of the checkout.

What a newcomer sees on stderr must be banpipe's own one-line messages only
(``TOOL: ...``): no library log lines, no tracebacks, no usage blocks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from toolpaths import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
OWN_LINE = re.compile(r"^(fasttail|alertfilter|banctl|wanwatch): \S")


def readme_commands(heading: str) -> list[str]:
    """The commands of the first ```sh block after ``heading``, comments cut off."""
    m = re.search(re.escape(heading) + r".*?```sh\n(.*?)\n```", README, re.S)
    assert m, heading
    return [line.split("#")[0].strip() for line in m.group(1).splitlines() if line.strip()]


def foreign_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not OWN_LINE.match(line)]


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory):
    """The checkout's tracked files (as they are now) in a new directory: a fresh clone
    without its history, and without the .venv of the checkout."""
    dest = tmp_path_factory.mktemp("clone") / "banpipe"
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    subprocess.run(
        ["tar", "-C", str(ROOT), "--null", "-T", "-", "-cf", "-"],
        input="\0".join(f for f in files if f and (ROOT / f).exists()).encode(),
        stdout=open(dest.parent / "src.tar", "wb"), check=True,  # noqa: SIM115
    )  # fmt: skip
    dest.mkdir()
    subprocess.run(["tar", "-C", str(dest), "-xf", str(dest.parent / "src.tar")], check=True)
    return dest


def clean_env(clone=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    if clone is not None:
        env["PATH"] = f"{clone}/.venv/bin:" + env["PATH"]
    return env


@pytest.mark.root
def test_quick_start_demo_in_a_fresh_clone_prints_only_our_own_lines(fresh_clone):
    demo, tests = readme_commands("## Quick start")
    assert (demo, tests) == ("bash examples/demo", "bash tests/run")  # verbatim, no sudo
    r = subprocess.run(
        demo.split(), cwd=fresh_clone, capture_output=True, text=True, env=clean_env(),
        timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert foreign_lines(r.stderr) == [], r.stderr
    assert "BAN 203.0.113.7" in r.stdout


@pytest.mark.root
def test_adhoc_pipe_in_a_fresh_clone_prints_only_our_own_lines(fresh_clone):
    if not (fresh_clone / ".venv" / "bin" / "fasttail").exists():
        subprocess.run(["bash", "examples/demo"], cwd=fresh_clone, env=clean_env(),
                       capture_output=True, check=True, timeout=900)  # fmt: skip
    lines = readme_commands("Then try a pipe of your own")
    pipe = lines[-1]
    assert pipe == "fasttail --once examples/alert.fast | alertfilter --dry-run"
    r = subprocess.run(
        ["bash", "-o", "pipefail", "-c", pipe], cwd=fresh_clone, capture_output=True,
        text=True, env=clean_env(fresh_clone), timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert foreign_lines(r.stderr) == [], r.stderr
    assert r.stdout.startswith("summary: 10 alerts")
    if not os.path.exists("/etc/banpipe/banpipe.toml"):
        # nothing configured: it says why nothing is banned, and what to set
        assert "no address is ours" in r.stderr and "set [network] wan" in r.stderr


def test_pip_install_leaves_the_checkout_as_it_was(fresh_clone, tmp_path):
    """README's `pip install .`: building the package writes nothing into the checkout."""

    def tree():
        return sorted(str(p.relative_to(fresh_clone)) for p in fresh_clone.rglob("*"))

    before = tree()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path),
         str(fresh_clone)],
        check=True, capture_output=True, env=clean_env(),
    )  # fmt: skip
    assert [w.name.split("-")[0] for w in tmp_path.glob("*.whl")] == ["banpipe"]
    assert tree() == before
