"""The partial directory of a long prepare: final-shaped memmaps filled row by row, plus a status per row.

`<partial>/plan.json` (fingerprint of the plan, written after the arrays exist),
`<partial>/<split>/<modality>.npy` and `<partial>/status-<split>.npy` (0 pending, 1 done,
2 + i skipped for REASONS[i]). Rows are flushed before their status is saved, so a row
marked done is on disk; an unmatched or damaged partial directory is started afresh.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from ..errors import DataError
from .manifest import save_npy, write_text

REASONS = (
    "missing audio",
    "missing video",
    "corrupt audio",
    "corrupt video",
    "too few frames",
    "bad id",
    "not in source",
    "window past end",
    "missing image",
    "corrupt image",
    "unparsable line",
)
PENDING, DONE = 0, 1
Shapes = dict[str, tuple[tuple[int, ...], str]]  # modality → (per-row shape, dtype)


def _open_rows(path: Path, rows: int, shape: tuple[int, ...], dtype: str, create: bool) -> np.ndarray:
    """A writable (rows, *shape) array backed by `path` (mmap cannot map zero rows)."""
    if rows == 0 and create:
        save_npy(path, np.zeros((0, *shape), dtype))
    if rows == 0:
        array = np.load(path, allow_pickle=False)
    elif create:
        array = open_memmap(path, mode="w+", dtype=dtype, shape=(rows, *shape))
        _reserve(path)
    else:
        array = np.load(path, mmap_mode="r+", allow_pickle=False)
    if array.shape != (rows, *shape) or str(array.dtype) != dtype:
        raise ValueError(f"{path.name} has {array.shape} {array.dtype}")
    return array


def _reserve(path: Path) -> None:
    """Allocate a new memmap's blocks now, so a full disk is an error naming the file.

    Without it, a decoded row written into a page the disk cannot hold is a SIGBUS.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return  # a file system without fallocate: nothing reserved, nothing lost
            raise OSError(e.errno, f"cannot write {path}: {e.strerror}") from None


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    save_npy(tmp, array)
    os.replace(tmp, path)


class Staging:
    """Row-addressed output arrays and their status, in a partial directory that a re-run resumes."""

    def __init__(self, root: Path, plan: dict[str, list[Any]], shapes: Shapes, lock_fd: int):
        self.root, self.plan, self.shapes, self.lock_fd = root, plan, shapes, lock_fd
        self.arrays: dict[str, dict[str, np.ndarray]] = {}
        self.status: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, root: Path, plan: dict[str, list[Any]], shapes: Shapes, fingerprint: str) -> Staging:
        """Resume `root` if it holds this plan's work, else start it afresh; holds a lock until closed."""
        staging = cls(root, plan, shapes, _lock(root))
        try:
            if not staging._load(fingerprint, create=False):
                shutil.rmtree(root, ignore_errors=True)
                staging._load(fingerprint, create=True)
        except BaseException:
            staging.close()
            raise
        return staging

    def _load(self, fingerprint: str, create: bool) -> bool:
        meta = self.root / "plan.json"
        try:
            if not create and json.loads(meta.read_text()).get("fingerprint") != fingerprint:
                return False
            for split, clips in self.plan.items():
                (self.root / split).mkdir(parents=True, exist_ok=True)
                self.arrays[split] = {
                    name: _open_rows(self.root / split / f"{name}.npy", len(clips), shape, dtype, create)
                    for name, (shape, dtype) in self.shapes.items()
                }
                status_path = self.root / f"status-{split}.npy"
                if create:
                    _save_atomic(status_path, np.zeros(len(clips), np.uint8))
                self.status[split] = np.load(status_path, allow_pickle=False)
                if self.status[split].shape != (len(clips),):
                    raise ValueError(f"{status_path.name} has the wrong length")
        except (OSError, ValueError, json.JSONDecodeError):
            if create:
                raise
            return False
        if create:  # last: only a complete skeleton is ever resumed
            write_text(meta, json.dumps({"fingerprint": fingerprint}))
        return True

    def pending(self) -> list[tuple[str, int, Any]]:
        """(split, row, clip) of every clip still to decode."""
        return [
            (s, int(r), self.plan[s][r])
            for s, status in self.status.items()
            for r in np.flatnonzero(status == PENDING)
        ]

    def write(self, split: str, row: int, arrays: dict[str, np.ndarray]) -> None:
        """Store the arrays of one clip and mark it done."""
        for name, array in arrays.items():
            self.arrays[split][name][row] = array
        self.status[split][row] = DONE

    def skip(self, split: str, row: int, reason: str) -> None:
        """Mark one clip as left out for `reason` (one of REASONS)."""
        self.status[split][row] = 2 + REASONS.index(reason)

    def skipped(self) -> dict[str, list[str]]:
        """Reason → ids of the clips left out so far."""
        out: dict[str, list[str]] = {}
        for split, status in self.status.items():
            for row in np.flatnonzero(status >= 2):
                out.setdefault(REASONS[status[row] - 2], []).append(self.plan[split][row].id)
        return out

    def kept(self) -> dict[str, int]:
        """Split → clips decoded so far."""
        return {split: int((status == DONE).sum()) for split, status in self.status.items()}

    def checkpoint(self) -> None:
        """Flush the arrays, then save the status (so a row marked done is on disk)."""
        for arrays in self.arrays.values():
            for array in arrays.values():
                if isinstance(array, np.memmap):
                    array.flush()
        for split, status in self.status.items():
            _save_atomic(self.root / f"status-{split}.npy", status)

    def finish(self) -> None:
        """Squeeze out skipped rows; write labels.npy and ids.txt per split; drop the bookkeeping."""
        self.checkpoint()
        for split, status in self.status.items():
            if (status == PENDING).any():
                raise DataError(
                    f"internal: {int((status == PENDING).sum())} clips of {split} were never decoded"
                )
            keep = np.flatnonzero(status == DONE)
            clips = [self.plan[split][r] for r in keep]
            self.arrays[split] = {}  # drop the memmaps before files are replaced
            if len(keep) < len(status):
                for name, (shape, dtype) in self.shapes.items():
                    _compact(self.root / split / f"{name}.npy", keep, shape, dtype)
            labels = np.array([c.label for c in clips], dtype=np.int64)
            save_npy(self.root / split / "labels.npy", labels)
            write_text(self.root / split / "ids.txt", "".join(f"{c.id}\n" for c in clips))
            os.remove(self.root / f"status-{split}.npy")
        os.remove(self.root / "plan.json")

    def close(self) -> None:
        """Flush and release the lock."""
        if self.status and (self.root / "plan.json").is_file():
            self.checkpoint()
        self.arrays = {}
        lock = _lock_path(self.root)
        os.close(self.lock_fd)
        lock.unlink(missing_ok=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _compact(path: Path, keep: np.ndarray, shape: tuple[int, ...], dtype: str, chunk: int = 256) -> None:
    """Rewrite `path` with only the rows `keep`, a chunk at a time (bounded memory)."""
    source = np.load(path, mmap_mode="r", allow_pickle=False)
    tmp = path.with_name(path.stem + ".compact.npy")
    target = _open_rows(tmp, len(keep), shape, dtype, create=True)
    for start in range(0, len(keep), chunk):
        target[start : start + chunk] = source[keep[start : start + chunk]]
    if isinstance(target, np.memmap):
        target.flush()
    del source, target
    os.replace(tmp, path)


def _lock_path(root: Path) -> Path:
    return root.with_name(root.name + ".lock")


def _lock(root: Path) -> int:
    """An exclusive lock beside `root`: two prepares never write the same partial directory."""
    root.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_lock_path(root), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataError(f"another `igm prepare` is writing {root}; wait for it or stop it") from None
    return fd
