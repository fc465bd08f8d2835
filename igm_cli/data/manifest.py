"""The prepared-data contract (DESIGN §3): manifest.json plus one .npy per split × modality.

A directory is complete only once it exists under its final name; it is written under a
stable temporary name (`.<out>.partial`, where a long prepare keeps what it can resume
from), `manifest.json` last, then renamed, so a half-finished prepare is never mistaken for
a finished one.
"""

from __future__ import annotations

import errno
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
    skipped: dict[str, list[str]] = {}  # reason → ids of the raw clips left out


ROWS_SUFFIX = ".rows"  # <split>/<m>.rows.npy: sample → row of <m>.npy, when samples share items


def array_path(root: Path, split: str, name: str) -> Path:
    """Where the array of `name` (a modality or 'labels') of `split` lives."""
    return root / split / f"{name}.npy"


def rows_path(root: Path, split: str, name: str) -> Path:
    """The sample → row index of a modality whose rows are shared (e.g. tweets sharing an image)."""
    return root / split / f"{name}{ROWS_SUFFIX}.npy"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions(media: bool = False, libraries: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions recorded in manifests and checkpoints (with `media`: the decoders too; plus `libraries`)."""
    import sklearn
    import torch

    from .. import __version__

    versions = {
        "igm": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
    }
    if media:
        import av
        import librosa
        import soundfile

        versions |= {
            "librosa": librosa.__version__,
            "soundfile": soundfile.__version__,
            "libsndfile": soundfile.__libsndfile_version__,
            "av": av.__version__,
            "ffmpeg": str(getattr(av, "ffmpeg_version_info", "unknown")),
        }
    from importlib.metadata import version

    return versions | {name: version(name) for name in libraries}


def save_npy(path: Path, array: np.ndarray) -> None:
    """np.save naming the file on failure: numpy reports a full disk as "N requested and M written"."""
    try:
        np.save(path, array, allow_pickle=False)
    except OSError as e:
        raise _write_error(e, path) from None


def write_text(path: Path, text: str) -> None:
    """Path.write_text naming the file on failure."""
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise _write_error(e, path) from None


def _write_error(e: OSError, path: Path) -> OSError:
    if e.errno:
        return OSError(e.errno, f"cannot write {path}: {e.strerror}")
    return OSError(errno.ENOSPC, f"cannot write {path}: {e} (short write: is the disk full?)")


def partial_dir(out: Path) -> Path:
    """Where the output of `out` is assembled (and a re-run finds what to resume)."""
    return out.with_name(f".{out.name}.partial")


def write_prepared(
    out: Path,
    *,
    dataset: str,
    classes: list[str],
    arrays: dict[str, dict[str, np.ndarray]],
    preprocessing: dict[str, Any],
    source: str = "",
) -> Manifest:
    """Atomically write in-memory `arrays[split][modality|'labels']` and the manifest to `out`."""
    out = Path(out)
    tmp = partial_dir(out)
    shutil.rmtree(tmp, ignore_errors=True)
    for split, named in arrays.items():
        (tmp / split).mkdir(parents=True)
        for name, array in named.items():
            save_npy(array_path(tmp, split, name), np.ascontiguousarray(array))
    return finish_prepared(
        tmp, out, dataset=dataset, classes=classes, preprocessing=preprocessing, source=source
    )


def finish_prepared(
    tmp: Path,
    out: Path,
    *,
    dataset: str,
    classes: list[str],
    preprocessing: dict[str, Any],
    source: str = "",
    skipped: dict[str, list[str]] | None = None,
    media: bool = False,
    libraries: tuple[str, ...] = (),
) -> Manifest:
    """Describe and checksum every file of the complete directory `tmp`, write the manifest, rename."""
    checksums, modalities, splits = {}, {}, {}
    for split in [s for s in SPLITS if (tmp / s).is_dir()]:
        for path in sorted((tmp / split).iterdir()):
            checksums[f"{split}/{path.name}"] = sha256_file(path)
            if path.suffix == ".npy" and path.stem != "labels" and not path.stem.endswith(ROWS_SUFFIX):
                array = np.load(path, mmap_mode="r", allow_pickle=False)
                modalities[path.stem] = ModalityInfo(shape=list(array.shape[1:]), dtype=str(array.dtype))
        labels = np.load(array_path(tmp, split, "labels"), allow_pickle=False)
        counts = np.bincount(labels, minlength=len(classes))
        splits[split] = SplitInfo(size=len(labels), class_counts=counts.tolist())
    manifest = Manifest(
        dataset=dataset,
        classes=classes,
        modalities=modalities,
        splits=splits,
        preprocessing=preprocessing,
        versions=library_versions(media, libraries),
        checksums=checksums,
        source=source,
        skipped=skipped or {},
    )
    write_text(tmp / "manifest.json", manifest.model_dump_json(indent=2))
    _swap_into_place(tmp, Path(out))
    return manifest


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` (--force) is moved aside first, then deleted."""
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(root: Path) -> Manifest:
    """Read and validate `root/manifest.json`."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DataError(f"no prepared data at {root} (manifest.json missing); run `igm prepare`")
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ValidationError) as e:
        raise DataError(f"corrupt manifest {path}: {str(e).splitlines()[0]}") from None


def verify_prepared(root: Path, dataset: str | None = None) -> list[str]:
    """Re-check a prepared directory against its manifest; returns the problems (empty: all good).

    Checks the dataset name, every file's SHA-256, and each array's rows, shape and dtype.
    """
    root = Path(root)
    manifest = read_manifest(root)
    problems = []
    if dataset is not None and manifest.dataset != dataset:
        problems.append(f"holds {manifest.dataset}, not {dataset}")
    for rel, expected in manifest.checksums.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(path) != expected:
            problems.append(f"{rel}: checksum mismatch")
    for split, info in manifest.splits.items():
        for name, want in [("labels", None), *manifest.modalities.items()]:
            rel = f"{split}/{name}.npy"
            indexed = f"{split}/{name}{ROWS_SUFFIX}.npy" in manifest.checksums
            rows = _indexed_rows(root, split, name) if indexed else info.size
            problems += _array_problems(array_path(root, split, name), rel, rows, want)
            if indexed:
                rel_rows = f"{split}/{name}{ROWS_SUFFIX}.npy"
                problems += _array_problems(rows_path(root, split, name), rel_rows, info.size, None)
    return list(dict.fromkeys(problems))  # a missing file is reported once


def _indexed_rows(root: Path, split: str, name: str) -> int:
    """Rows the shared array of `name` must have: one past the largest index (0 if unreadable)."""
    try:
        index = np.load(rows_path(root, split, name), mmap_mode="r", allow_pickle=False)
        return int(index.max()) + 1 if len(index) else 0
    except (ValueError, OSError):
        return 0  # the index itself is then reported as unreadable


def _array_problems(path: Path, rel: str, rows: int, want: ModalityInfo | None) -> list[str]:
    """Rows, shape and dtype of one array against the manifest."""
    if not path.is_file():
        return [f"{rel}: missing"]
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        return [f"{rel}: unreadable ({str(e).splitlines()[0]})"]
    found = [len(array), *array.shape[1:]], str(array.dtype)
    expected = [rows, *(want.shape if want else [])], (want.dtype if want else "int64")
    if found == expected:
        return []
    return [f"{rel}: {found[0]} {found[1]}, manifest says {expected[0]} {expected[1]}"]
