"""The stages of one alert's latency, from `perf trace` of the whole pipe
(``bench_pipeline.py --perf-trace FILE``): the append, each stage's read and write,
banctl's WAL writes, fdatasync and netlink send, and the bench's receipt of the
kernel's event, on one clock. perf trace costs a few microseconds per system call
(strace: tens), so the figures are close to the untraced run's."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

STAGE_CALLS = "read,write,pwrite64,fdatasync,sendto,sendmsg,recvfrom"
_PERF_LINE = re.compile(r"^\s*([\d.]+) \(\s*([\d.]*)(?: ms)?\): \S+/(\d+) (\w+)\((?:fd: (\d+))?")
# (label, role, system call (a prefix; "+": its end), fd or None: any), in order: each
# stage is the role's first such call after the previous stage; for fdatasync, the
# last one before the netlink send (a WAL restart syncs its header first).
STAGES = (
    ("fasttail wakes (inotify read)", "fasttail", "read", None),
    ("fasttail writes the line", "fasttail", "write", 1),
    ("alertfilter reads it", "alertfilter", "read", None),
    ("alertfilter writes it", "alertfilter", "write", 1),
    ("banctl reads it", "banctl", "read", None),
    ("banctl's first WAL write", "banctl", "pwrite64", None),
    ("banctl's fdatasync begins", "banctl", "fdatasync", None),
    ("banctl's fdatasync returned", "banctl", "fdatasync+", None),
    ("banctl's netlink send", "banctl", "send", None),
    ("the bench has the kernel's event", "watch", "re", None),
)


def breakdown(path: Path, pids: dict[str, int]) -> None:
    """Median time from the append to each stage's system call (``--perf-trace``)."""
    events = []  # (start ms, end ms, role, call, fd)
    roles = {p: k for k, p in pids.items()}
    for line in path.read_text().splitlines():
        m = _PERF_LINE.match(line)
        if not m:
            continue
        start, dur, pid, call, fd = m.groups()
        role = roles.get(int(pid))
        if role is None or role == "bench" and call != "write":
            continue
        end = float(start) + float(dur or 0)
        events.append((float(start), end, role, call, int(fd) if fd else None))
    appends = [i for i, e in enumerate(events) if e[2] == "bench" and e[3] == "write"]
    per_stage: list[list[float]] = [[] for _ in STAGES]
    for n, i in enumerate(appends[1:], 1):
        t0, stop = events[i][0], appends[n + 1] if n + 1 < len(appends) else len(events)
        j, found = i, []
        for _label, role, call, fd in STAGES:
            want, at_end = call.rstrip("+"), call.endswith("+")
            while j < stop:
                e = events[j]
                if e[2] == role and e[3].startswith(want) and (fd is None or e[4] == fd):
                    if want == "fdatasync":  # the last fdatasync before the send
                        k = j + 1
                        while k < stop and not (events[k][2] == role and events[k][3] == "send"):
                            if events[k][2] == role and events[k][3] == "fdatasync":
                                j = k
                            k += 1
                        e = events[j]
                    found.append((e[1] if at_end else e[0]) - t0)
                    break
                j += 1
            else:
                break
        if len(found) == len(STAGES):
            for k, v in enumerate(found):
                per_stage[k].append(v)
    if not per_stage[0]:
        print("  breakdown: no complete alert in the trace")
        return
    print(f"  breakdown, median ms after the append ({len(per_stage[0])} alerts):")
    before = 0.0
    for (label, *_), vals in zip(STAGES, per_stage, strict=True):
        med = statistics.median(vals)
        print(f"    {label:40} {med:6.3f}  (+{med - before:.3f})")
        before = med
