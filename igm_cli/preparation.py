"""`igm prepare`: run a dataset module's prepare(), skipping finished output; verify a directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .data import get_dataset
from .data.manifest import read_manifest, verify_prepared


def prepare_dataset(name: str, *, source: Path | None, out: Path, force: bool = False) -> dict[str, Any]:
    """Prepare `name` into `out`; an already complete `out` is left alone unless `force`."""
    module = get_dataset(name)
    if (Path(out) / "manifest.json").is_file() and not force:
        manifest = read_manifest(out)
        return {
            "out": str(out),
            "prepared": False,
            "splits": _sizes(manifest),
            "message": f"{out} is already prepared ({_describe(manifest)}); --force rebuilds it",
        }
    manifest = module.prepare(source, Path(out), {})
    return {
        "out": str(out),
        "prepared": True,
        "splits": _sizes(manifest),
        "message": f"prepared {name} into {out}: {_describe(manifest)}",
    }


def verify_dataset(root: Path) -> dict[str, Any]:
    """Check every array of a prepared directory against its manifest's checksums."""
    problems = verify_prepared(root)
    message = f"{root}: " + ("all arrays match the manifest" if not problems else "; ".join(problems))
    return {"out": str(root), "problems": problems, "message": message}


def _sizes(manifest) -> dict[str, int]:
    return {split: info.size for split, info in manifest.splits.items()}


def _describe(manifest) -> str:
    sizes = ", ".join(f"{s} {n}" for s, n in _sizes(manifest).items())
    return f"{len(manifest.classes)} classes, modalities {', '.join(manifest.modalities)}; {sizes}"
