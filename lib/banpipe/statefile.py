"""Durable, atomic state files: a reader sees the old content or the new, never half.

Write to a temporary file in the same directory, fsync it, rename it over the target,
then fsync the directory so the rename itself survives a power cut.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` durably; raises OSError (e.g. ENOSPC) untouched."""
    target = Path(path)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{target.name}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def replace_file(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically for readers, but not durably.

    For files that can be made again (pages, metrics), by the thousand: no directory
    creation, plain strings (pathlib costs ~50 us a call), and no fsync. Without fsync a
    reader (a web server) still sees the old file or the new one, never half: the
    rename is atomic and the data is in the page cache before it. Only a power cut can
    lose what was written since the last writeback (ext4 flushes a file renamed over
    another one first: the old page or the new; a file new to the directory may come
    back empty), and the next page run writes it again. An fsync per file would cost
    milliseconds each, minutes for 200,000 files.

    The temporary file has one name per directory and thread (``.tmp.PID.TID``), not one
    per target: creating and renaming ``.NAME.tmp.PID`` touches a second directory
    block per file (its name hashes elsewhere in ext4's htree than the target's), which
    made 200,000 files take about twice the system time (bench/README.md).
    """
    tmp = f"{os.path.dirname(path) or '.'}/.tmp.{os.getpid()}.{threading.get_native_id()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        _unlink_quietly(Path(tmp))
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(Path(tmp))
        raise


def write_json_atomic(path: str | Path, obj: Any, mode: int = 0o644) -> None:
    data = json.dumps(obj, ensure_ascii=False, sort_keys=True, indent=1).encode() + b"\n"
    write_atomic(path, data, mode)


def read_json(path: str | Path) -> Any:
    """The JSON in ``path``; raises OSError or ValueError (json.JSONDecodeError)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
