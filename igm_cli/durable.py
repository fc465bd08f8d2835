"""Durable writes: temporary file → fsync → rename → fsync of the directory.

A crash or power loss leaves either the old file or the complete new one, never a renamed
but empty file (the data is on disk before the rename, the rename is on disk before we go
on). A write that fails (a full disk) removes its temporary file and raises one OSError
naming the file that was being written.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_mode() -> int:
    """0o666 minus the process umask: the mode `open()` gives any other new file."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read the umask by setting it, then put it back
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: Path, data: bytes | str, *, unique: bool = False) -> None:
    """Replace `path` by `data` atomically and durably; honours the umask like open() does.

    `unique` takes a temporary name no other writer can hold (mkstemp): for directories that
    several machines write into at once, such as a sharded sweep's.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp: Path | None = None
    try:
        tmp = _temporary(path, unique)
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # an interrupt mid-write must not leave the temporary file either
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _naming(e, path) from None
        raise
    fsync_dir(path.parent)


def _temporary(path: Path, unique: bool) -> Path:
    """The temporary file beside `path` that the data is written to before the rename."""
    if not unique:
        return path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(name, file_mode())  # mkstemp makes 0600; others sharing the directory must read it
    return Path(name)


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
