"""The resumable record of a landscape: `surfaces.safetensors` in the output directory.

It holds, per checkpoint i, `loss.i`, `accuracy.i` and `done.i` (grid arrays), `centre.i`
(loss, accuracy at θ) and `hessian.i` (λ, iterations, converged), NaN until computed,
plus the axes and, in its metadata, the configuration that produced it. It is rewritten
atomically every few seconds, so a stopped run loses at most those seconds; a rerun
with the same configuration continues, a different one is refused rather than mixed in.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

from igm_cli.durable import write_atomic
from igm_cli.errors import UsageError

FORMAT = "igm-landscape/1"
FILENAME = "surfaces.safetensors"
SAVE_EVERY = 5.0  # seconds between periodic saves


class LandscapeStore:
    """Arrays of every checkpoint's surface, loaded from or saved to `out/surfaces.safetensors`."""

    def __init__(self, out: Path, config: dict[str, Any], arrays: dict[str, np.ndarray]):
        self.out, self.config, self.arrays = out, config, arrays
        self.last_save = time.monotonic()

    @classmethod
    def open(cls, out: Path, config: dict[str, Any], axes: list[np.ndarray], count: int) -> LandscapeStore:
        """Continue the record in `out` if its configuration is `config`, else start one."""
        path = out / FILENAME
        if path.is_file():
            stored, arrays = read_store(path)
            if stored != config:
                raise UsageError(
                    f"{out} holds a different landscape ({difference(stored, config)}); "
                    "pass another --out or delete it"
                )
            return cls(out, config, arrays)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"--out {out} exists and is not a landscape directory; pass another --out")
        return cls(out, config, fresh_arrays(axes, count))

    @staticmethod
    def holds(out: Path, config: dict[str, Any]) -> bool:
        """Whether `out` holds the record of exactly this configuration."""
        path = out / FILENAME
        if not path.is_file():
            return False
        try:
            return read_store(path)[0] == config
        except UsageError:
            return False

    def surface(self, i: int) -> dict[str, np.ndarray]:
        """Views of checkpoint i's `loss`, `accuracy` and `done` grids."""
        return {k: self.arrays[f"{k}.{i}"] for k in ("loss", "accuracy", "done")}

    def points_done(self, i: int) -> int:
        """Grid points of checkpoint i already evaluated."""
        return int(self.arrays[f"done.{i}"].sum())

    def save(self) -> None:
        """Write atomically and durably; serialised in memory, so a full disk is one OSError."""
        self.out.mkdir(parents=True, exist_ok=True)
        data = save(self.arrays, metadata={"format": FORMAT, "config": json.dumps(self.config)})
        write_atomic(self.out / FILENAME, data)
        self.last_save = time.monotonic()

    def maybe_save(self) -> None:
        """Save if the last save is more than SAVE_EVERY seconds old."""
        if time.monotonic() - self.last_save >= SAVE_EVERY:
            self.save()


def fresh_arrays(axes: list[np.ndarray], count: int) -> dict[str, np.ndarray]:
    """Axes plus NaN-filled (nothing done) arrays for `count` checkpoints."""
    shape = tuple(len(a) for a in axes)
    names = ("alpha", "beta")[: len(axes)]
    arrays = {name: np.asarray(a, dtype=np.float64) for name, a in zip(names, axes, strict=True)}
    for i in range(count):
        arrays[f"loss.{i}"] = np.full(shape, np.nan)
        arrays[f"accuracy.{i}"] = np.full(shape, np.nan)
        arrays[f"done.{i}"] = np.zeros(shape, dtype=np.uint8)
        arrays[f"centre.{i}"] = np.full(2, np.nan)
        arrays[f"hessian.{i}"] = np.full(3, np.nan)
    return arrays


def read_store(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(configuration, arrays) of a saved record; an unreadable one is a usage error."""
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
            arrays = {k: f.get_tensor(k).copy() for k in f.keys()}  # noqa: SIM118 (no __iter__)
        if metadata.get("format") != FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}")
        return json.loads(metadata["config"]), arrays
    except Exception as e:  # safetensors raises several types for damaged files
        raise UsageError(
            f"{path} is not a readable landscape record ({e}); delete it to start over"
        ) from None


def difference(stored: dict[str, Any], config: dict[str, Any]) -> str:
    """The first setting that differs, as `key: there → here`."""
    for key in sorted(set(stored) | set(config)):
        if stored.get(key) != config.get(key):
            if key == "checkpoints":
                return "other checkpoints, or their files changed"
            return f"{key}: {stored.get(key)} there, {config.get(key)} here"
    return "unknown"
