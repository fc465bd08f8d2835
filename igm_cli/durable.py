"""Durable writes: temporary file → fsync → rename → fsync of the directory.

A crash or power loss leaves either the old file or the complete new one, never a renamed
but empty file (the data is on disk before the rename, the rename is on disk before we go
on). A write that fails (a full disk) removes its temporary file and raises one OSError
naming the file that was being written.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace `path` by `data` atomically and durably; honours the umask like open() does."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    payload = data.encode() if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _naming(e, path) from None
    fsync_dir(path.parent)


def append_line(path: Path, line: str) -> None:
    """Append one line and fsync it (metrics.jsonl: each record on disk before the next step)."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _naming(e, path) from None


def _naming(e: OSError, path: Path) -> OSError:
    """The same error, naming the file we meant to write (not a temporary name)."""
    code = e.errno or errno.EIO
    return OSError(code, f"cannot write {path}: {e.strerror or os.strerror(code)}")
