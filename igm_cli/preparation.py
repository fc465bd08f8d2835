"""`igm prepare`: run a dataset module's prepare() (finished output is left alone), or verify a directory."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from .data import get_dataset
from .data.base import PrepareOptions, check_options
from .data.manifest import Manifest, read_manifest, verify_prepared
from .errors import DataError


def prepare_dataset(
    name: str,
    *,
    source: Path | None,
    out: Path,
    force: bool = False,
    options: PrepareOptions | None = None,
) -> dict[str, Any]:
    """Prepare `name` into `out`; an already complete `out` is left alone unless `force`."""
    module = get_dataset(name)
    options = options or PrepareOptions()
    check_options(name, getattr(module, "OPTIONS", frozenset()), options)
    if (Path(out) / "manifest.json").is_file() and not force:
        manifest = read_manifest(out)
        if manifest.dataset != name:
            raise DataError(f"{out} holds prepared {manifest.dataset}, not {name}; choose another --out")
        return _result(manifest, out, prepared=False, seconds=0.0) | {
            "message": f"{out} is already prepared ({_describe(manifest)}); --force rebuilds it"
        }
    start = time.monotonic()
    manifest = module.prepare(source, Path(out), options)
    result = _result(manifest, out, prepared=True, seconds=time.monotonic() - start)
    return result | {"message": f"prepared {name} into {out}: {_describe(manifest)}"}


def verify_dataset(root: Path, name: str | None = None) -> dict[str, Any]:
    """Check every file of a prepared directory against its manifest (checksums, shapes, dataset)."""
    problems = verify_prepared(root, name)
    message = f"{root}: " + ("every array matches the manifest" if not problems else "; ".join(problems))
    return {"out": str(root), "problems": problems, "message": message}


def _result(manifest: Manifest, out: Path, *, prepared: bool, seconds: float) -> dict[str, Any]:
    return {
        "out": str(out),
        "prepared": prepared,
        "splits": {split: info.size for split, info in manifest.splits.items()},
        "skipped": {reason: len(ids) for reason, ids in manifest.skipped.items()},
        "bytes": modality_bytes(manifest),
        "seconds": round(seconds, 2),
    } | ({"counts": manifest.preprocessing["counts"]} if "counts" in manifest.preprocessing else {})


def modality_bytes(manifest: Manifest) -> dict[str, int]:
    """Bytes of each modality's arrays over all splits."""
    rows = sum(info.size for info in manifest.splits.values())
    return {
        m: rows * math.prod(info.shape) * np.dtype(info.dtype).itemsize
        for m, info in manifest.modalities.items()
    }


def _describe(manifest: Manifest) -> str:
    sizes = ", ".join(f"{s} {info.size}" for s, info in manifest.splits.items())
    text = f"{len(manifest.classes)} classes, modalities {', '.join(manifest.modalities)}; {sizes}"
    text += "; size " + ", ".join(f"{m} {_human(n)}" for m, n in modality_bytes(manifest).items())
    counts = manifest.preprocessing.get("counts", {})
    filtered = {s: c["filtered"] for s, c in counts.items() if c.get("filtered")}
    if filtered:
        text += "; filtered out: " + ", ".join(f"{s} {n}" for s, n in filtered.items())
    if manifest.skipped:
        parts = ", ".join(
            f"{reason} {len(ids)} ({ids[0]}{', …' if len(ids) > 1 else ''})"
            for reason, ids in manifest.skipped.items()
        )
        text += f"; skipped: {parts}, every id listed under `skipped` in manifest.json"
    return text


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
