"""The documented examples are what the tools really print."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from toolpaths import BIN, ROOT

DOC = (ROOT / "docs" / "pipe-format.md").read_text(encoding="utf-8")
EXAMPLES = [m for m in re.findall(r"```json\n(.*?)\n```", DOC, re.S)]


def run_pipe(tool_env, *, filtered: bool, source: str = "alert.fast") -> list[str]:
    cmd = [sys.executable, str(BIN / "fasttail"), "--once", "--from-start", "--year", "2026",
           str(ROOT / "examples" / source)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, env=tool_env, check=True).stdout
    if filtered:
        cmd = [sys.executable, str(BIN / "alertfilter"), "--config",
               str(ROOT / "examples" / "banpipe.toml")]  # fmt: skip
        out = subprocess.run(cmd, input=out, capture_output=True, env=tool_env, check=True).stdout
    return out.decode().splitlines()


def test_boundary_examples_are_real_output(tool_env):
    assert len(EXAMPLES) == 4
    assert EXAMPLES[0] == run_pipe(tool_env, filtered=False)[0]
    assert EXAMPLES[1] == run_pipe(tool_env, filtered=False, source="eve.json")[0]
    assert EXAMPLES[2] == run_pipe(tool_env, filtered=True)[2]


def test_wan_example_has_the_documented_shape():
    event = json.loads(EXAMPLES[3])
    assert list(event) == ["v", "type", "interface", "added", "removed", "addresses", "ts"]


def test_readme_quotes_the_first_example():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert EXAMPLES[0] in readme
