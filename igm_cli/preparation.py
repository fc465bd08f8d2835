"""`igm prepare`: run a dataset module's prepare() (finished output is left alone), or verify a directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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
        "seconds": round(seconds, 2),
    }


def _describe(manifest: Manifest) -> str:
    sizes = ", ".join(f"{s} {info.size}" for s, info in manifest.splits.items())
    text = f"{len(manifest.classes)} classes, modalities {', '.join(manifest.modalities)}; {sizes}"
    if manifest.skipped:
        parts = ", ".join(
            f"{reason} {len(ids)} ({ids[0]}{', …' if len(ids) > 1 else ''})"
            for reason, ids in manifest.skipped.items()
        )
        text += f"; skipped: {parts}, every id listed under `skipped` in manifest.json"
    return text
