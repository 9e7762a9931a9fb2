"""Man pages and bash completions, generated from the tools' own argparse parsers.

    python -m banpipe.docgen man DIR          # DIR/fasttail.1 ... DIR/wanwatch.1
    python -m banpipe.docgen completions DIR  # DIR/fasttail ... (bash-completion files)

Generated, not written by hand, so they cannot disagree with ``--help``: every option,
metavar, choice, subcommand and the exit codes come from the same ``build_parser()``
the tool runs. The Ansible role runs this on the target after installing, so the pages
always match the installed version. No dependency beyond the standard library.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from . import __version__

TOOLS = ("fasttail", "alertfilter", "banctl", "wanwatch", "banshare")
SUMMARY = {
    "fasttail": "follow a Snort/Suricata alert file, write one JSON line per alert",
    "alertfilter": "pass on only the alerts that should lead to a ban, and whom to ban",
    "banctl": "the ban ledger and the firewall: ban, extend, expire, restore, list",
    "wanwatch": "follow the WAN interface's addresses, write them where banpipe looks",
    "banshare": "share ban decisions with other gateways through NATS JetStream",
}


def build_parser(tool: str) -> argparse.ArgumentParser:
    """The parser ``tool`` itself runs (imported lazily: only the one asked for)."""
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r}")
    module = __import__(f"banpipe.{tool}", fromlist=["build_parser"])
    return module.build_parser()


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._SubParsersAction)]


def _subcommands(
    parser: argparse.ArgumentParser,
) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, help, parser)`` of each subcommand, in the order of ``--help``."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help or "" for c in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, helps.get(name, ""), sub))
    return out


# --- man pages --------------------------------------------------------------------------


def _roff(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, no line starting a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        ("\\&" + line) if line[:1] in (".", "'") else line for line in text.split("\n")
    )


def _synopsis_of(action: argparse.Action) -> str:
    if not action.option_strings:
        return _metavar(action)
    flag = action.option_strings[-1]
    if action.nargs == 0:
        return flag
    return f"{flag} {_metavar(action)}"


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper()


def _option_items(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in _options(parser):
        if action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(
            (f"{o} {_metavar(action)}" if action.nargs != 0 else o) for o in action.option_strings
        )
        label = names or _metavar(action)
        text = action.help or ""
        if action.choices and action.metavar is not None:
            text += f" (one of: {', '.join(map(str, action.choices))})"
        if "%(" in text:  # argparse's own help substitutions
            text = text % {"default": action.default, "dest": action.dest}
        yield f".TP\n.B {_roff(label)}\n{_roff(text)}"


def man_page(tool: str, parser: argparse.ArgumentParser | None = None) -> str:
    """The roff source of ``tool(1)``."""
    parser = parser or build_parser(tool)
    subs = _subcommands(parser)
    lines = [
        f'.TH {tool.upper()} 1 "" "banpipe {__version__}" "banpipe manual"',
        ".SH NAME",
        f"{tool} \\- {_roff(SUMMARY.get(tool, ''))}",
        ".SH SYNOPSIS",
        f".B {tool}",
    ]
    usage = " ".join(
        f"[{_synopsis_of(a)}]" if a.option_strings else _synopsis_of(a)
        for a in _options(parser)
        if a.help != argparse.SUPPRESS and a.dest not in ("help",)
    )
    lines.append(_roff(usage + (" COMMAND [ARGS]" if subs else "")))
    lines += [".SH DESCRIPTION", _roff(parser.description or "")]
    lines += [".SH OPTIONS", *_option_items(parser)]
    if subs:
        lines.append(".SH COMMANDS")
        for name, text, sub in subs:
            own = [a for a in _options(sub) if a.default is not argparse.SUPPRESS]
            args = " ".join(
                f"[{_synopsis_of(a)}]" if a.option_strings else _synopsis_of(a)
                for a in own
                if a.dest != "help"
            )
            lines.append(f".TP\n.B {_roff((name + ' ' + args).strip())}\n{_roff(text)}")
            if sub.description and sub.description != text:
                lines.append(".IP\n" + _roff(sub.description))
    if parser.epilog:
        lines += [".SH NOTES", _roff(parser.epilog)]
    lines += [
        ".SH FILES",
        ".TP\n.I /etc/banpipe/banpipe.toml\nthe configuration (see the README's "
        "Configuration section)",
        ".SH SEE ALSO",
        ", ".join(f"\\fB{t}\\fR(1)" for t in TOOLS if t != tool),
        "",
    ]
    return "\n".join(lines)


# --- bash completion --------------------------------------------------------------------


def _words(actions: Sequence[argparse.Action]) -> str:
    return " ".join(o for a in actions for o in a.option_strings if a.help != argparse.SUPPRESS)


def _value_cases(actions: Sequence[argparse.Action]) -> list[str]:
    """``case`` arms: what follows an option that takes a value."""
    cases = []
    seen: set[str] = set()
    for a in actions:
        pattern = "|".join(a.option_strings)
        if not a.option_strings or a.nargs == 0 or pattern in seen:
            continue
        seen.add(pattern)
        if a.choices:
            cases.append(_arm(pattern, f'compgen -W "{" ".join(map(str, a.choices))}"'))
        elif re.search(r"FILE", str(a.metavar or "")):
            cases.append(_arm(pattern, "compgen -f"))
        elif a.metavar == "IFACE":
            cases.append(_arm(pattern, 'compgen -W "$(ls /sys/class/net 2>/dev/null)"'))
        elif a.nargs == argparse.REMAINDER:
            cases.append(_arm(pattern, "compgen -c"))
        else:
            cases.append(f"        {pattern}) return;;")
    return cases


def _arm(pattern: str, generator: str) -> str:
    return f'        {pattern}) COMPREPLY=($({generator} -- "$cur")); return;;'


def bash_completion(tool: str, parser: argparse.ArgumentParser | None = None) -> str:
    """A bash-completion file for ``tool`` (source it, or drop it in completions/)."""
    parser = parser or build_parser(tool)
    func = f"_banpipe_{tool}"
    top = _options(parser)
    subs = _subcommands(parser)
    body = [
        f"# bash completion for {tool} (banpipe {__version__}); generated by banpipe.docgen",
        f"{func}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        "    COMPREPLY=()",
        '    case "$prev" in',
        *_value_cases(top + [a for _, _, s in subs for a in _options(s)]),
        "    esac",
    ]
    if subs:
        names = " ".join(n for n, _, _ in subs)
        body += [
            "    local i cmd=",
            "    for ((i = 1; i < COMP_CWORD; i++)); do",
            f'        case " {names} " in',
            '            *" ${COMP_WORDS[i]} "*) cmd=${COMP_WORDS[i]}; break;;',
            "        esac",
            "    done",
            '    case "$cmd" in',
        ]
        for name, _, sub in subs:
            body.append(_arm(name, f'compgen -W "{_words(_options(sub))}"'))
        body += [
            "    esac",
            f'    COMPREPLY=($(compgen -W "{_words(top)} {names}" -- "$cur"))',
        ]
    else:
        positional = [a for a in top if not a.option_strings]
        body += [
            '    if [[ "$cur" == -* ]]; then',
            f'        COMPREPLY=($(compgen -W "{_words(top)}" -- "$cur"))',
        ]
        if positional:
            body += ["    else", '        COMPREPLY=($(compgen -f -- "$cur"))']
        body.append("    fi")
    body += ["}", f"complete -F {func} {tool}", ""]
    return "\n".join(body)


# --- command line -----------------------------------------------------------------------


def write_all(kind: str, directory: Path) -> list[Path]:
    """Write every tool's man page (``TOOL.1``) or completion file (``TOOL``); returns
    the files that changed (none on a rerun: the Ansible role reports that as ok)."""
    make: Callable[[str], str] = man_page if kind == "man" else bash_completion
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for tool in TOOLS:
        path = directory / (f"{tool}.1" if kind == "man" else tool)
        text = make(tool)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            path.chmod(0o644)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    from . import cli

    ap = cli.ArgumentParser(
        prog="banpipe-docgen",
        description="Write man pages or bash completions generated from the tools' parsers.",
    )
    ap.add_argument("kind", choices=("man", "completions"))
    ap.add_argument("directory", metavar="DIR", type=Path)
    args, code = cli.parse_args(ap, argv)
    if args is None:
        return code
    try:
        for path in write_all(args.kind, args.directory):
            print(path)
    except OSError as exc:
        cli.Reporter("banpipe-docgen").say(str(args.directory), exc.strerror or str(exc))
        return cli.EX_CANTCREAT
    return cli.EX_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
