"""inotify for select()-driven loops, through pyinotify.

``PathWatcher`` watches files by name: it watches their directories, so a file that is
created, replaced by rename (how editors, Ansible and our own atomic writes save) or
deleted is noticed as well as one written in place. Its ``fileno()`` goes into the
tool's select() next to stdin; ``changed()`` then says which watched paths changed.
"""

from __future__ import annotations

import logging
import os
import select
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import pyinotify

# pyinotify logs every watch it cannot add at ERROR level ("[... pyinotify ERROR]
# add_watch: cannot watch /etc/banpipe ..."), even with quiet=True, and when a watched
# file moves out of a watched directory. We handle both (a missing directory is
# watched for through its ancestor, see PathWatcher), and banpipe's only messages are
# its own ``TOOL: PLACE: REASON`` lines: every tool imports pyinotify through here.
logging.getLogger("pyinotify").setLevel(logging.CRITICAL + 1)

NAME_EVENTS = (
    pyinotify.IN_CLOSE_WRITE
    | pyinotify.IN_MOVED_TO
    | pyinotify.IN_MOVED_FROM
    | pyinotify.IN_CREATE
    | pyinotify.IN_DELETE
    | pyinotify.IN_MODIFY
    | pyinotify.IN_ATTRIB
)


_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class Event(NamedTuple):
    """One inotify event: the watched ``path``, the ``name`` in it ('' for the path
    itself); ``path`` None when the kernel's queue overflowed (events were lost)."""

    path: str | None
    name: str
    mask: int


class InotifyWatcher:
    """A pyinotify WatchManager (its watch table) whose events are read here, without
    blocking."""

    def __init__(self) -> None:
        self.manager = pyinotify.WatchManager()
        self._closed = False

    def fileno(self) -> int:
        return self.manager.get_fd()

    def add(self, path: str | Path, mask: int) -> int | None:
        """Watch ``path``; the watch descriptor, or None when it cannot be watched."""
        result = self.manager.add_watch(str(path), mask, quiet=True)
        wd = result.get(str(path), -1)
        return wd if wd >= 0 else None

    def remove(self, wd: int) -> None:
        self.manager.rm_watch(wd, quiet=True)

    def events(self, timeout_ms: int = 0) -> list[Event]:
        """Events available now (or within ``timeout_ms``); never blocks longer.

        Read and parsed here, not by pyinotify's Notifier: it made an object of each
        event and formatted it for a debug log nobody reads, about a quarter of banctl
        apply's CPU per ban (each commit's events on the watched -wal file;
        bench/README.md, latency)."""
        fd = self.fileno()
        out: list[Event] = []
        while select.select([fd], [], [], timeout_ms / 1000)[0]:
            try:
                data = os.read(fd, 1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            self._parse(data, out)
            timeout_ms = 0
        return out

    def _parse(self, data: bytes, out: list[Event]) -> None:
        watches = self.manager.watches
        pos, end = 0, len(data)
        while pos + _EVENT.size <= end:
            wd, mask, _cookie, size = _EVENT.unpack_from(data, pos)
            name = data[pos + _EVENT.size : pos + _EVENT.size + size].rstrip(b"\0")
            pos += _EVENT.size + size
            if mask & pyinotify.IN_Q_OVERFLOW:
                out.append(Event(None, "", mask))
                continue
            watch = watches.get(wd)
            if watch is None:
                continue  # removed meanwhile
            out.append(Event(watch.path, os.fsdecode(name), mask))
            if mask & pyinotify.IN_IGNORED:
                self.manager.del_watch(wd)  # the kernel dropped it (as pyinotify did)

    def discard(self) -> None:
        """Drop the queued events unread, for a watcher whose events only wake its
        owner up (call it when select() said the descriptor is readable: one read then
        takes them all without blocking). pyinotify made an object of each event and
        formatted it for a debug log nobody reads: about 0.1 ms per wake-up of
        fasttail, for every alert appended (bench/README.md, latency). Its table of
        watches then keeps those the kernel dropped (IN_IGNORED), which is harmless for
        an owner that keeps its own watch descriptors and removes them quietly."""
        try:
            os.read(self.fileno(), 1 << 16)
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.manager.close()
            except OSError:
                pass


class PathWatcher:
    """Notices changes to a set of file paths by watching their directories.

    A directory that does not exist yet (``/run/banpipe`` before wanwatch ran,
    ``/etc/banpipe`` on a fresh machine) is not polled: its nearest existing ancestor
    is watched for creations, and the directory is tried again only when something
    appears there. (Retrying on every read cost one failed inotify_add_watch per
    alert batch: 9,382 in a 1M-alert replay.)
    """

    def __init__(self, paths: Iterable[str | Path] = ()) -> None:
        self._inotify = InotifyWatcher()
        self._paths: dict[str, set[str]] = {}  # directory -> names
        self._missing_dirs: set[str] = set()
        self._ancestors: dict[str, int] = {}  # existing ancestor of a missing dir -> wd
        self.set_paths(paths)

    def fileno(self) -> int:
        return self._inotify.fileno()

    def set_paths(self, paths: Iterable[str | Path]) -> None:
        wanted: dict[str, set[str]] = {}
        for p in paths:
            path = Path(os.path.abspath(p))
            wanted.setdefault(str(path.parent), set()).add(path.name)
        for directory in wanted:
            if directory not in self._paths or directory in self._missing_dirs:
                if self._inotify.add(directory, NAME_EVENTS) is None:
                    self._missing_dirs.add(directory)
                else:
                    self._missing_dirs.discard(directory)
        self._missing_dirs &= set(wanted)
        self._paths = wanted
        self._watch_ancestors()

    def _watch_ancestors(self) -> None:
        """Watch the nearest existing ancestor of each missing directory (only)."""
        wanted: set[str] = set()
        for directory in self._missing_dirs:
            ancestor = _existing_ancestor(directory)
            if ancestor is not None:
                wanted.add(ancestor)
        for ancestor in sorted(self._ancestors.keys() - wanted):
            wd = self._ancestors.pop(ancestor)
            if ancestor not in self._paths or ancestor in self._missing_dirs:
                self._inotify.remove(wd)  # a watched directory keeps its own watch
        for ancestor in sorted(wanted - self._ancestors.keys()):
            if ancestor in self._paths and ancestor not in self._missing_dirs:
                continue  # already watched with NAME_EVENTS, which include creation
            wd = self._inotify.add(ancestor, pyinotify.IN_CREATE | pyinotify.IN_MOVED_TO)
            if wd is not None:
                self._ancestors[ancestor] = wd

    def paths(self) -> list[str]:
        return [os.path.join(d, n) for d, names in self._paths.items() for n in names]

    def changed(self) -> set[str]:
        """Watched paths touched since the last call (non-blocking)."""
        out: set[str] = set()
        appeared = False
        for event in self._inotify.events():
            if event.path is None:  # the queue overflowed: any of them may have changed
                out.update(self.paths())
                continue
            names = self._paths.get(event.path)
            if names and event.name in names:
                out.add(os.path.join(event.path, event.name))
            if self._missing_dirs and (event.path in self._ancestors or event.path in self._paths):
                appeared = True
        if appeared:
            before = set(self._missing_dirs)
            self.set_paths(self.paths())
            for directory in before - self._missing_dirs:
                out.update(os.path.join(directory, n) for n in self._paths.get(directory, ()))
        return out

    def close(self) -> None:
        self._inotify.close()


def _existing_ancestor(directory: str) -> str | None:
    parent = os.path.dirname(directory)
    while parent != directory:
        if os.path.isdir(parent):
            return parent
        directory, parent = parent, os.path.dirname(parent)
    return None


class FollowWatches:
    """The inotify watches of one followed name (banpipe.follow): its directory, for
    the name, and the files read now and next, through ``/proc/self/fd/N`` so that the
    watch is on the inode held open wherever the name moves on. The events only wake
    the follower up; it looks at the files itself. (pyinotify's ERROR when a watched
    file moves out of a watched directory is expected here: /proc/self/fd is never a
    watched directory; the logger is silenced above.)"""

    DIR_EVENTS = (
        pyinotify.IN_CREATE | pyinotify.IN_MOVED_TO | pyinotify.IN_MOVED_FROM | pyinotify.IN_DELETE
    )
    FILE_EVENTS = (
        pyinotify.IN_MODIFY
        | pyinotify.IN_MOVE_SELF
        | pyinotify.IN_DELETE_SELF
        | pyinotify.IN_ATTRIB
    )

    def __init__(self, directory: str) -> None:
        self.watcher = InotifyWatcher()
        self.directory = directory
        self.dir_wd: int | None = None
        self.cur_wd: int | None = None
        self.next_wd: int | None = None

    def _fd(self, fd: int | None) -> int | None:
        return None if fd is None else self.watcher.add(f"/proc/self/fd/{fd}", self.FILE_EVENTS)

    def watch(self, cur_fd: int | None, next_fd: int | None) -> None:
        """Add the watches that are missing (each is retried until it holds)."""
        if self.dir_wd is None:
            self.dir_wd = self.watcher.add(self.directory, self.DIR_EVENTS)
        if self.cur_wd is None:
            self.cur_wd = self._fd(cur_fd)
        if self.next_wd is None:
            self.next_wd = self._fd(next_fd)

    def drop_cur(self) -> None:
        if self.cur_wd is not None:
            self.watcher.remove(self.cur_wd)
            self.cur_wd = None

    def drop_next(self) -> None:
        if self.next_wd is not None:
            self.watcher.remove(self.next_wd)
            self.next_wd = None

    def promote_next(self) -> None:
        """The next file is the current one now."""
        self.drop_cur()
        self.cur_wd, self.next_wd = self.next_wd, None

    def wait(self, timeout: float, wake_fd: int | None) -> None:
        """Until an event, a byte on ``wake_fd`` (drained) or ``timeout`` seconds."""
        fds = [self.watcher.fileno()]
        if wake_fd is not None:
            fds.append(wake_fd)
        ready, _, _ = select.select(fds, [], [], timeout)
        if wake_fd is not None and wake_fd in ready:
            try:
                while os.read(wake_fd, 512):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
        if self.watcher.fileno() in ready:
            self.watcher.discard()  # the events only wake us: the follower looks itself

    def close(self) -> None:
        self.watcher.close()
