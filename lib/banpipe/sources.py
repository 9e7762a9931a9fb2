"""Where protection comes from: the config, its whitelist files and the WAN state file.

One home for alertfilter (which never emits a ban of a protected address) and banctl
(which refuses one): both read the same files the same way and build the same
:class:`~banpipe.protect.Protection` from them. :func:`load` reads every source once;
:func:`reload` re-reads what changed and keeps the last good content of a file that
cannot be read now, so a broken or half-written file never drops protection.
:class:`FirstReads` tells, once the files are watched, which changed between their
first read and the watch (that change raised no event).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain

from banpipe.cli import EX_CONFIG, WARNING, Reporter, ToolError
from banpipe.config import Config
from banpipe.protect import Protection, read_address_file
from banpipe.wanstate import WanStateError, read_wan_state

Note = tuple[str, str]  # (place, what changed): said once the new state is in force
# A file's stat identity (st_ino, st_size, st_mtime_ns): a replace (a new inode), a new
# size or a new modification time shows a change. None: no such file (or no stat).
Identity = tuple[int, int, int] | None
# File-system timestamps are coarse (a clock tick on ext4 and tmpfs, up to 2 s on FAT
# and some network file systems): a file modified this close before its identity was
# taken can change again in place with the same stamp and size, unseen. It is read again.
COARSE_NS = 2_000_000_000


@dataclass(frozen=True)
class Sources:
    """One consistent reading of every protection source."""

    config: Config
    lists: dict[str, tuple[str, ...]]  # whitelist file -> its networks
    wan: frozenset[str]  # the WAN state file's addresses (the config's are in config)

    def whitelist_extra(self) -> Iterable[str]:
        return chain.from_iterable(self.lists.values())

    def protection(self) -> Protection:
        return Protection.from_config(self.config, self.wan, self.whitelist_extra())


def read_list(name: str, report: Reporter) -> tuple[str, ...]:
    """The networks of one whitelist file; bad lines are reported as warnings.
    Raises OSError when the file cannot be read."""
    networks, errors = read_address_file(name)
    for lineno, reason in errors:
        report.say(f"{name}:{lineno}", reason, level=WARNING)
    return tuple(networks)


def load(
    config: Config, report: Reporter, *, strict: bool, wan: Iterable[str] | None = None
) -> Sources:
    """Read every source of ``config``.

    ``strict`` (alertfilter at start): a whitelist file or WAN state file that cannot
    be read is a config error (ToolError, exit 78). Otherwise (banctl) it is a warning
    and that source is left out: the static ``[network] wan`` stands. ``wan``: the WAN
    state's addresses, when the caller has just read them.
    """
    lists: dict[str, tuple[str, ...]] = {}
    for name in config.filter.whitelist_files:
        try:
            lists[name] = read_list(name, report)
        except OSError as exc:
            why = f"cannot read whitelist file: {exc.strerror or exc}"
            if strict:
                raise ToolError(f"{name}: {why}", EX_CONFIG) from None
            report.error(name, why, "warning")
    if wan is not None:
        return Sources(config, lists, frozenset(wan))
    if not strict:
        return Sources(config, lists, wan_addresses(config, report))
    try:
        wan = frozenset(read_wan_state(config.network.wan_state))
    except WanStateError as exc:
        raise ToolError(f"{config.network.wan_state}: {exc}", EX_CONFIG) from None
    return Sources(config, lists, wan)


def wan_addresses(config: Config, report: Reporter) -> frozenset[str]:
    """The WAN state file's addresses now; when it cannot be read, a warning and none
    (the static ``[network] wan`` stands)."""
    path = config.network.wan_state
    if not path:
        return frozenset()
    try:
        return frozenset(read_wan_state(path))
    except WanStateError as exc:
        report.error(path, f"{exc}; using the static [network] wan only", "warning")
        return frozenset()


def reload(
    old: Sources, config: Config, changed: set[str], everything: bool, report: Reporter
) -> tuple[Sources, list[Note]] | None:
    """``config``'s sources, re-reading the files in ``changed`` (all when
    ``everything`` or when ``config`` is new); a file that cannot be read keeps its
    previous content. None when ``config`` names a whitelist file that was never read
    and cannot be now: applying it would drop protection someone asked for."""
    new_config = config is not old.config
    notes: list[Note] = []

    def touched(path: str) -> bool:
        full = os.path.abspath(path)
        return everything or full in changed or os.path.dirname(full) in changed

    lists: dict[str, tuple[str, ...]] = {}
    for name in config.filter.whitelist_files:
        if name in old.lists and not (new_config or touched(name)):
            lists[name] = old.lists[name]
            continue
        try:
            lists[name] = read_list(name, report)
            n = len(lists[name])
            notes.append((name, f"whitelist reloaded ({n} entr{'y' if n == 1 else 'ies'})"))
        except OSError as exc:
            why = f"cannot read whitelist file: {exc.strerror or exc}"
            if name not in old.lists:
                report.say(name, f"{why}; keeping the previous configuration", level=WARNING)
                return None
            report.say(name, f"{why}; keeping the previous list", level=WARNING)
            lists[name] = old.lists[name]

    wan = old.wan
    wan_path = config.network.wan_state
    if touched(wan_path) or wan_path != old.config.network.wan_state:
        try:
            wan = frozenset(read_wan_state(wan_path))
            notes.append((wan_path, f"WAN addresses now {', '.join(sorted(wan)) or 'none'}"))
        except WanStateError as exc:
            report.say(wan_path, f"{exc}; keeping the previous WAN addresses", level=WARNING)
    return Sources(config, lists, wan), notes


def watch_paths(config_file: str, config: Config) -> list[str]:
    """Every file a source comes from, and each missing directory above one (a file
    in /run/banpipe before wanwatch ran is only noticed when that directory appears)."""
    files = [config_file, config.network.wan_state, *config.filter.whitelist_files]
    paths = {os.path.abspath(f) for f in files}
    for path in list(paths):
        directory = os.path.dirname(path)
        while not os.path.isdir(directory) and directory != os.path.dirname(directory):
            paths.add(directory)
            directory = os.path.dirname(directory)
    return sorted(paths)


def identity(path: str, stat: Callable[[str], os.stat_result] = os.stat) -> Identity:
    try:
        st = stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FirstReads:
    """The stat identity of each source file, taken just before its first read.

    A change between that read and the watch on the file raised no event (wanwatch
    writes its first state while the pipe starts at boot, or during a long restore):
    once the watch exists, :meth:`changed` names the files to read again, and only
    those. ``clock``: the wall clock in nanoseconds (file times are wall-clock times).
    """

    def __init__(
        self,
        *,
        stat: Callable[[str], os.stat_result] = os.stat,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.stat = stat
        self.clock = clock
        self.seen: dict[str, tuple[Identity, int]] = {}  # absolute path -> (identity, when)

    def note(self, paths: Iterable[str]) -> None:
        """Call just before reading ``paths``: a change during the read then shows as a
        change (read again, harmless), never the other way round."""
        now = self.clock()
        for path in paths:
            if path:
                full = os.path.abspath(path)
                self.seen[full] = (identity(full, self.stat), now)

    def changed(self) -> set[str]:
        """The noted files (absolute paths) whose identity differs now, or was taken too
        soon after their last modification to tell (COARSE_NS)."""
        return {
            path
            for path, (before, when) in self.seen.items()
            if identity(path, self.stat) != before
            or (before is not None and before[2] + COARSE_NS > when)
        }


def differing(old: Sources, paths: set[str], report: Reporter) -> set[str]:
    """Of ``paths`` (absolute), the whitelist and WAN state files of ``old.config``
    whose content now differs from ``old``'s, read again quietly (a file that cannot be
    read now keeps its content: :func:`reload` says so when it is applied)."""
    quiet = Reporter(report.tool, io.StringIO())
    result = reload(old, old.config, paths, False, quiet)
    if result is None:
        return set()
    now = result[0]
    differ = {
        os.path.abspath(name)
        for name in old.config.filter.whitelist_files
        if now.lists.get(name) != old.lists.get(name)
    }
    if now.wan != old.wan:
        differ.add(os.path.abspath(old.config.network.wan_state))
    return differ
