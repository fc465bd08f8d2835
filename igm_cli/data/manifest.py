"""The prepared-data contract (DESIGN §3): manifest.json plus one .npy per split × modality.

A directory is complete only once it exists under its final name; it is written under a
temporary name, `manifest.json` last, then renamed, so a half-finished prepare is never
mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import DataError

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


class ModalityInfo(BaseModel):
    """Shape (per sample) and dtype of one modality's arrays."""

    model_config = ConfigDict(extra="forbid")
    shape: list[int]
    dtype: str


class SplitInfo(BaseModel):
    """Size and per-class counts of one split."""

    model_config = ConfigDict(extra="forbid")
    size: int
    class_counts: list[int]


class Manifest(BaseModel):
    """Everything needed to read and trust a prepared directory."""

    model_config = ConfigDict(extra="forbid")
    format: int = FORMAT_VERSION
    dataset: str
    classes: list[str]
    modalities: dict[str, ModalityInfo]
    splits: dict[str, SplitInfo]
    preprocessing: dict[str, Any]
    versions: dict[str, str]
    checksums: dict[str, str]
    source: str = ""


def array_path(root: Path, split: str, name: str) -> Path:
    """Where the array of `name` (a modality or 'labels') of `split` lives."""
    return root / split / f"{name}.npy"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions recorded in manifests and checkpoints."""
    import sklearn
    import torch

    from .. import __version__

    return {
        "igm": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
    }


def write_prepared(
    out: Path,
    *,
    dataset: str,
    classes: list[str],
    arrays: dict[str, dict[str, np.ndarray]],
    preprocessing: dict[str, Any],
    source: str = "",
) -> Manifest:
    """Atomically write `arrays[split][modality|'labels']` and the manifest to `out`."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    checksums, modalities, splits = {}, {}, {}
    for split, named in arrays.items():
        (tmp / split).mkdir(parents=True)
        for name, array in named.items():
            path = array_path(tmp, split, name)
            np.save(path, np.ascontiguousarray(array), allow_pickle=False)
            checksums[f"{split}/{name}.npy"] = sha256_file(path)
            if name != "labels":
                modalities[name] = ModalityInfo(shape=list(array.shape[1:]), dtype=str(array.dtype))
        counts = np.bincount(named["labels"], minlength=len(classes))
        splits[split] = SplitInfo(size=len(named["labels"]), class_counts=counts.tolist())
    manifest = Manifest(
        dataset=dataset,
        classes=classes,
        modalities=modalities,
        splits=splits,
        preprocessing=preprocessing,
        versions=library_versions(),
        checksums=checksums,
        source=source,
    )
    (tmp / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return manifest


def read_manifest(root: Path) -> Manifest:
    """Read and validate `root/manifest.json`."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DataError(f"no prepared data at {root} (manifest.json missing); run `igm prepare`")
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ValidationError) as e:
        raise DataError(f"corrupt manifest {path}: {str(e).splitlines()[0]}") from None


def verify_prepared(root: Path) -> list[str]:
    """Re-check every array against the manifest's checksums; returns the problems."""
    manifest = read_manifest(root)
    problems = []
    for rel, expected in manifest.checksums.items():
        path = Path(root) / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(path) != expected:
            problems.append(f"{rel}: checksum mismatch")
    return problems
