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
    assert len(EXAMPLES) == 5
    assert EXAMPLES[0] == run_pipe(tool_env, filtered=False)[0]
    assert EXAMPLES[1] == run_pipe(tool_env, filtered=False, source="eve.json")[0]
    assert EXAMPLES[2] == run_pipe(tool_env, filtered=True)[2]


def test_position_example_has_the_shape_fasttail_writes(tool_env, tmp_path):
    example = json.loads(EXAMPLES[3])
    cmd = [sys.executable, str(BIN / "fasttail"), "--once", "--from-start", "--ledger",
           str(tmp_path / "ledger"), str(ROOT / "examples" / "alert.fast")]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, env=tool_env, check=True).stdout
    real = [json.loads(x) for x in out.splitlines()]
    positions = [o for o in real if o.get("type") == "position"]
    assert positions[0] == real[0] and positions[-1] == real[-1]
    assert list(example) == list(real[0]) == ["v", "type", "position"]
    assert list(example["position"]) == list(real[0]["position"])


def test_wan_example_has_the_documented_shape():
    event = json.loads(EXAMPLES[4])
    assert list(event) == ["v", "type", "interface", "added", "removed", "addresses", "ts"]


def test_readme_quotes_the_first_example():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert EXAMPLES[0] in readme


FORMATS_DOC = (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")


def test_every_example_line_of_the_formats_doc_is_read_as_an_alert():
    """docs/formats.md's made-up lines have the exact shape of real ones: each text or
    JSON example block reads as alerts only, one per alert line or block."""
    from datetime import datetime

    from banpipe.alert import problem
    from banpipe.parsers import AlertParser

    blocks = re.findall(r"```(text|json)\n(.*?)```", FORMATS_DOC, re.DOTALL)
    assert len(blocks) >= 6
    total = 0
    for _kind, body in blocks:
        parser = AlertParser(now=datetime(2026, 11, 28, 12, 0))
        lines = body.splitlines()
        out = [x for i, line in enumerate(lines, 1) for x in parser.feed(line, i)]
        out += parser.flush()
        assert out and all(type(x) is dict and problem(x) is None for x in out), (body, out)
        headers = sum(line.startswith("[**] [") for line in lines)  # alert_full blocks
        expected = headers or sum(bool(line.strip()) for line in lines)
        assert len(out) == expected, (body, out)
        total += len(out)
    assert total >= 14
