"""Run directories: runs/<preset>-<timestamp>/ with config.yaml, metrics.jsonl, results.json.

A run directory is never overwritten: a name clash gets a numeric suffix. `--resume auto`
looks at the newest run of a preset (`auto_resume_target`); a run directory is held by one
process at a time (`RunLock`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .durable import append_line, write_atomic
from .errors import UsageError

LOCK_NAME = "lock"


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def check_name(name: str) -> str:
    """A run or preset name must be one path component: a run never lands outside --runs-dir."""
    if not NAME_PATTERN.match(name):
        raise UsageError(
            f"invalid run name {name!r}: one path component of letters, digits and . _ + - "
            "(not starting with . or -)"
        )
    return name


def create_run_dir(runs_dir: Path, preset_name: str) -> Path:
    """A new, empty run directory named after the preset and the local time."""
    check_name(preset_name)
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{preset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        path = runs_dir / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UsageError(f"cannot create a run directory under {runs_dir}")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file under a temporary name, fsync, then rename it into place."""
    write_atomic(path, text)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it."""
    append_line(path, json.dumps(record))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete records of a JSONL file (a line cut short by a kill is dropped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def trim_metrics(path: Path, stage: int, epochs_done: int) -> int:
    """Drop records written after the checkpoint a resume starts from; returns how many.

    A kill between a record's append and the checkpoint write leaves records of work the
    resumed run redoes: epoch records past `epochs_done`, stage records of stages >= `stage`.
    """
    records = read_jsonl(path)
    kept = [
        r
        for r in records
        if (r.get("kind") == "epoch" and r.get("epochs_done", 0) <= epochs_done)
        or (r.get("kind") == "stage" and r.get("stage", 0) < stage)
    ]
    if path.is_file() and (len(kept) != len(records) or path.read_text().count("\n") != len(records)):
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return len(records) - len(kept)


# ---------------------------------------------------------------- --resume auto

_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")


@dataclass
class AutoTarget:
    """What `--resume auto` does: resume a run, reuse an empty one, show a finished one, or start."""

    action: str  # "resume" | "reuse" | "finished" | "new"
    run_dir: Path | None


def runs_of(runs_dir: Path, preset_name: str) -> list[Path]:
    """Run directories of a preset, newest first (by the timestamp and suffix in the name)."""
    found = []
    for p in Path(runs_dir).glob(f"{preset_name}-*"):
        m = _STAMP.search(p.name)
        if p.is_dir() and m and p.name[: m.start()] == preset_name:
            found.append(((m.group(1), int(m.group(2) or 1)), p))
    return [p for _, p in sorted(found, reverse=True)]


def auto_resume_target(
    runs_dir: Path, preset_name: str, matches: Callable[[str], bool], same_settings: bool = False
) -> AutoTarget:
    """The newest run of the preset decides: finished → show it; checkpoint → resume it.

    A run directory without any checkpoint (killed before its first epoch ended) is reused
    when its config.yaml `matches` this preset, or when it has none (nothing to lose);
    otherwise it is passed over. With `same_settings` every run must match.
    """
    for run in runs_of(runs_dir, preset_name):
        config = run / "config.yaml"
        text = config.read_text() if config.is_file() else None
        if same_settings and text is not None and not matches(text):
            continue
        if (run / "results.json").is_file():
            return AutoTarget("finished", run)
        if (run / "last.safetensors").is_file():
            return AutoTarget("resume", run)
        if text is None or matches(text):
            return AutoTarget("reuse", run)
    return AutoTarget("new", None)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files a killed writer left (`.<name>.tmp-<pid>`); only the lock holder calls this."""
    for tmp in Path(run_dir).glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- one process per run


class RunLock:
    """An advisory lock on a run directory: `<run>/lock` holds the holder's pid and host.

    flock(2) makes it exclusive and is released by the kernel when the holder dies, so the
    lock file a dead process left (kill -9) is taken over without any clean-up; the pid and
    host in the file are what a refused process reports. The file is removed on release.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise UsageError naming its holder (exit 2)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise UsageError(
                    f"run {self.path.parent} is in use by {holder} (lock {self.path}); "
                    "wait for it or stop it first"
                ) from None
            try:  # the holder we waited on may have removed the file: lock the one in place
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        except OSError as e:  # a full disk: no holder recorded, so hold nothing
            self.path.unlink(missing_ok=True)
            os.close(fd)
            raise OSError(e.errno, f"cannot write {self.path}: {e.strerror}") from None
        self.fd = fd
        remove_stale_temporaries(self.path.parent)  # nobody else writes here now
        return self

    def release(self) -> None:
        """Remove the lock file while still holding it, then release."""
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()
