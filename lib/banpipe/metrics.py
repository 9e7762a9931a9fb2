"""Prometheus textfile metrics, for node_exporter's textfile collector.

The text exposition format is written by hand (no runtime dependency): ``# HELP``,
``# TYPE``, then ``name{label="value"} number`` lines. Names follow Prometheus
conventions: ``banpipe_`` prefix, ``_total`` for counters, units in the name
(``_seconds``, ``_bytes``), a ratio as ``_ratio``. Files are replaced atomically, and
the temporary name does not end in ``.prom``, so the collector never reads half a file.

``banctl apply`` writes ``[metrics] textfile``; ``alertfilter`` and ``fasttail`` write
their own counters beside it (``sibling(textfile, "alertfilter")``:
``banpipe.prom`` -> ``banpipe-alertfilter.prom``), because node_exporter reads every
``*.prom`` in its directory and each file must have a single writer.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from banpipe.statefile import replace_file

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric: its name, type (counter or gauge), help text and samples."""

    name: str
    kind: str
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((tuple(labels.items()), value))
        return self


def counter(name: str, help: str, value: float | None = None) -> Family:
    f = Family(name, "counter", help)
    return f.add(value) if value is not None else f


def gauge(name: str, help: str, value: float | None = None) -> Family:
    f = Family(name, "gauge", help)
    return f.add(value) if value is not None else f


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(families: Iterable[Family]) -> str:
    """The exposition text of ``families`` (help text: one line, escaped)."""
    out = []
    for f in families:
        help_text = f.help.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {f.name} {help_text}\n# TYPE {f.name} {f.kind}\n")
        for labels, value in f.samples:
            if labels:
                inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels)
                out.append(f"{f.name}{{{inner}}} {_number(value)}\n")
            else:
                out.append(f"{f.name} {_number(value)}\n")
    return "".join(out)


def write_textfile(path: str, families: Iterable[Family]) -> None:
    """Replace ``path`` with the exposition of ``families``; raises OSError."""
    replace_file(path, render(families).encode("utf-8"))


def sibling(textfile: str, tool: str) -> str:
    """The textfile of ``tool`` beside banctl's: ``DIR/banpipe.prom`` ->
    ``DIR/banpipe-TOOL.prom``."""
    stem, ext = os.path.splitext(textfile)
    return f"{stem}-{tool}{ext or '.prom'}"


def by_label(name: str, kind: str, help: str, label: str, values: Mapping[str, float]) -> Family:
    """A family with one sample per ``values`` key, as label ``label``."""
    f = Family(name, kind, help)
    for key in sorted(values):
        f.add(values[key], **{label: key})
    return f


class Throttle:
    """Says when a file is due again: at most once per ``interval`` seconds (monotonic)."""

    def __init__(self, interval: float, clock=time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.last: float | None = None

    def due(self) -> bool:
        now = self.clock()
        if self.last is not None and now - self.last < self.interval:
            return False
        self.last = now
        return True
