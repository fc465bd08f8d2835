"""Run directories: runs/<preset>-<timestamp>/ with config.yaml, metrics.jsonl, results.json.

A run directory is never overwritten: a name clash gets a numeric suffix.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import UsageError


def create_run_dir(runs_dir: Path, preset_name: str) -> Path:
    """A new, empty run directory named after the preset and the local time."""
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
    """Write a file under a temporary name, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def find_resumable(runs_dir: Path, preset_name: str) -> Path:
    """The newest run of this preset that has last.safetensors and no results.json."""
    candidates = [
        p
        for p in Path(runs_dir).glob(f"{preset_name}-*")
        if (p / "last.safetensors").is_file() and not (p / "results.json").exists()
    ]
    if not candidates:
        raise UsageError(f"--resume auto: no unfinished run of preset {preset_name!r} under {runs_dir}")
    return max(candidates, key=lambda p: (p / "last.safetensors").stat().st_mtime)
