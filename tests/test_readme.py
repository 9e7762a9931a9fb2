"""The README agrees with the tools: every documented flag, default and exit code.

Each tool's section shows a usage block and lists exit codes; the tool's own parser
(the one ``--help`` prints) must offer exactly those flags and the same exit codes.
The configuration block must name every key of the schema, and each value must be the
real default unless its comment says ``example``.
"""

from __future__ import annotations

import re
import sys

import pytest

from banpipe import config as configmod
from banpipe import docgen
from toolpaths import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

README = (ROOT / "README.md").read_text(encoding="utf-8")
TOOLS = docgen.TOOLS
NOT_IN_USAGE = {"-h", "--help", "--version"}  # said once for every tool, in prose


def section(tool: str) -> str:
    m = re.search(rf"^### {tool}: .*?(?=^### |^## )", README, re.S | re.M)
    assert m, f"README has no section for {tool}"
    return m.group(0)


def usage_block(tool: str) -> str:
    m = re.search(r"```\n(.*?)\n```", section(tool), re.S)
    assert m
    return m.group(1)


def parser_flags(tool: str) -> set[str]:
    parser = docgen.build_parser(tool)
    flags = {o for a in docgen._options(parser) for o in a.option_strings}
    for _, _, sub in docgen._subcommands(parser):
        flags |= {o for a in docgen._options(sub) for o in a.option_strings}
    return flags - NOT_IN_USAGE


def exit_codes(text: str) -> set[int]:
    m = re.search(r"Exit (?:codes|status):(.*?)(?:\.\s|\.$|\.\n|$)", text, re.S)
    assert m, text[-300:]
    return {int(n) for n in re.findall(r"\b(\d{1,2})\b(?! ?s\b)", m.group(1))}


@pytest.mark.parametrize("tool", TOOLS)
def test_usage_block_shows_exactly_the_tools_flags(tool):
    documented = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", usage_block(tool)))
    assert documented == parser_flags(tool)


@pytest.mark.parametrize("tool", TOOLS)
def test_every_flag_the_readme_gives_a_tool_exists(tool):
    # every `tool ... --flag` command in the README, up to the next pipe or backtick
    uses = re.findall(rf"(?<![\w/-]){tool}((?: [^`|\n]*)?)", README)
    mentioned = {f for use in uses for f in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", use)}
    assert mentioned - {"--help", "--version"} <= parser_flags(tool)
    # and a flag named on its own in the tool's section belongs to the tool
    alone = set(re.findall(r"`(--[a-z][\w-]*)[ `]", section(tool)))
    assert alone - {"--help", "--version"} <= parser_flags(tool)


@pytest.mark.parametrize("tool", TOOLS)
def test_exit_codes_match_help(tool):
    parser = docgen.build_parser(tool)
    assert exit_codes(section(tool)) == exit_codes(parser.epilog or "")


def test_common_options_are_described_truthfully():
    # "every tool has --help, --version, --debug; these take --config FILE"
    m = re.search(r"Every tool has `--help`.*?Exit codes are\s+listed below", README, re.S)
    assert m
    text = m.group(0)
    for tool in TOOLS:
        flags = parser_flags(tool) | NOT_IN_USAGE
        assert {"--help", "--version", "--debug"} <= flags
        takes_config = "--config" in flags
        assert (f"`{tool}`" in text) == takes_config, tool


def readme_config() -> tuple[dict, dict[tuple[str, str], str]]:
    m = re.search(r"```toml\n(.*?)\n```", README, re.S)
    assert m
    text = m.group(1)
    comments: dict[tuple[str, str], str] = {}
    current = ""
    for line in text.splitlines():
        if h := re.match(r"\[(\w+)\]", line):
            current = h.group(1)
        elif k := re.match(r"(\w+) = [^#]*(?:#(.*))?$", line):
            comments[(current, k.group(1))] = k.group(2) or ""
    return tomllib.loads(text), comments


def test_config_block_names_every_key_of_the_schema():
    data, _ = readme_config()
    documented = {s: sorted(keys) for s, keys in data.items()}
    assert documented == {s: sorted(keys) for s, keys in configmod.section_keys().items()}


def test_config_block_values_are_the_defaults_unless_marked_example():
    data, comments = readme_config()
    parsed = configmod.parse_config(README_TOML(), "README.md")
    defaults = configmod.Config()
    wrong = []
    for (sect, key), comment in comments.items():
        value = getattr(getattr(parsed, sect), key)
        default = getattr(getattr(defaults, sect), key)
        example = "example" in comment
        if (value == default) == example:
            wrong.append(f"[{sect}] {key}: {value!r} vs default {default!r}, comment {comment!r}")
        for claim in re.findall(r'("[^"]*"|\d+) \(default\)', comment):
            assert tomllib.loads(f"x = {claim}")["x"] == default, (sect, key, claim)
    assert not wrong, "\n".join(wrong)


def README_TOML() -> str:  # noqa: N802 - reads like the constant it is
    m = re.search(r"```toml\n(.*?)\n```", README, re.S)
    assert m
    return m.group(1)


def test_help_defaults_match_the_config_defaults():
    defaults = configmod.Config()
    text = docgen.man_page("wanwatch")
    assert str(defaults.network.wan_state).replace("-", "\\-") in text
    assert defaults.wanwatch.interface is None  # README says: no default
    assert "no default" in README.split("interface = ")[1].splitlines()[0]


def test_quick_start_needs_no_sudo():
    m = re.search(r"## Quick start\n(.*?)```sh\n(.*?)\n```", README, re.S)
    assert m
    commands = [line.split("#")[0].strip() for line in m.group(2).splitlines()]
    assert commands == ["bash examples/demo", "bash tests/run"]
    assert "sudo bash" not in README
