"""Man pages and bash completions generated from the parsers: complete and valid."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from banpipe import docgen


def flags_of(parser):
    found = {o for a in docgen._options(parser) for o in a.option_strings}
    for _, _, sub in docgen._subcommands(parser):
        found |= {o for a in docgen._options(sub) for o in a.option_strings}
    return found


@pytest.mark.parametrize("tool", docgen.TOOLS)
def test_man_page_documents_every_option_and_the_exit_codes(tool):
    parser = docgen.build_parser(tool)
    page = docgen.man_page(tool)
    assert page.startswith(f".TH {tool.upper()} 1 ")
    for flag in flags_of(parser):
        assert flag.replace("-", "\\-") in page, flag
    for name, _, _ in docgen._subcommands(parser):
        assert f".B {name}" in page
    assert "Exit" in page


@pytest.mark.parametrize("tool", docgen.TOOLS)
def test_man_page_renders_without_warnings(tool, tmp_path):
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff not installed")
    page = tmp_path / f"{tool}.1"
    page.write_text(docgen.man_page(tool))
    r = subprocess.run(
        [groff, "-man", "-ww", "-z", str(page)], capture_output=True, text=True, check=False
    )
    assert (r.returncode, r.stderr) == (0, "")


def complete(tmp_path, tool, words):
    """What bash offers after ``words`` (the last one being completed)."""
    script = tmp_path / tool
    script.write_text(docgen.bash_completion(tool))
    quoted = " ".join(f"'{w}'" for w in words)
    r = subprocess.run(
        ["bash", "-c", f"source {script}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
         f'_banpipe_{tool}; printf "%s\\n" "${{COMPREPLY[@]}}"'],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return set(r.stdout.split())


def test_completion_of_options_commands_and_choices(tmp_path):
    assert complete(tmp_path, "fasttail", ["fasttail", "--f"]) == {"--format", "--from-start"}
    assert "snort3-full" in complete(tmp_path, "fasttail", ["fasttail", "--format", "sn"])
    assert complete(tmp_path, "banctl", ["banctl", "un"]) == {"unban"}
    assert complete(tmp_path, "banctl", ["banctl", "ban", "192.0.2.1", "--f"]) == {
        "--for",
        "--force",
    }
    assert complete(tmp_path, "banctl", ["banctl", "list", "--backend", "n"]) == {
        "nftables",
        "null",
    }
    assert "lo" in complete(tmp_path, "wanwatch", ["wanwatch", "--interface", "l"])


def test_write_all_writes_one_file_per_tool(tmp_path):
    assert docgen.main(["man", str(tmp_path / "man1")]) == 0
    assert sorted(p.name for p in (tmp_path / "man1").iterdir()) == sorted(
        f"{t}.1" for t in docgen.TOOLS
    )
    assert docgen.main(["completions", str(tmp_path / "c")]) == 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(docgen.TOOLS)
    assert docgen.write_all("man", tmp_path / "man1") == []  # a rerun changes nothing
