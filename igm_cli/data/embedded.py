"""UCI Multiple Features, shipped inside the package: a real multi-view dataset that runs anywhere.

Six feature views of the same 2,000 handwritten digits serve as six modalities
(attribution in `mfeat/README.md`). Split 60/20/20, stratified, seed 0, fixed; every
view is z-scored with statistics of the training split.
"""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import numpy as np

from .manifest import Manifest, write_prepared
from .prepared import PreparedDataset, SplitArrays
from .splits import stratified_split

NAME = "mfeat"
MODALITIES = ("fou", "fac", "kar", "pix", "zer", "mor")
CLASSES = [str(d) for d in range(10)]
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
SPLIT_SEED = 0


def _read_view(view: str) -> tuple[np.ndarray, np.ndarray]:
    """(features (2000, F) float64, labels (2000,) int64) of one view's CSV."""
    ref = resources.files("igm_cli.data").joinpath(f"mfeat/mfeat-{view}.csv.gz")
    with ref.open("rb") as raw, gzip.open(raw, "rt") as f:
        table = np.loadtxt(f, delimiter=",", skiprows=1)
    return table[:, :-1], table[:, -1].astype(np.int64)


def build_arrays(
    views_wanted: tuple[str, ...] = MODALITIES,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, object]]:
    """All splits × views as standardised float32 arrays, plus the preprocessing record."""
    views, labels = {}, None
    for view in views_wanted:
        features, view_labels = _read_view(view)
        if labels is not None and not np.array_equal(labels, view_labels):
            raise ValueError(f"mfeat view {view} disagrees on labels")
        views[view], labels = features, view_labels
    index = stratified_split(labels, SPLIT_FRACTIONS, SPLIT_SEED)
    arrays: dict[str, dict[str, np.ndarray]] = {s: {"labels": labels[i]} for s, i in index.items()}
    for view, features in views.items():
        train = features[index["train"]]
        mean, std = train.mean(0), train.std(0)
        std[std == 0] = 1.0
        for split, rows in index.items():
            arrays[split][view] = ((features[rows] - mean) / std).astype(np.float32)
    preprocessing = {
        "split": {"fractions": list(SPLIT_FRACTIONS), "seed": SPLIT_SEED, "stratified": True},
        "standardize": "z-score per feature with train-split mean/std (std 0 → 1)",
        "dtype": "float32",
    }
    return arrays, preprocessing


def prepare(source: Path | None, out: Path, opts: dict | None = None) -> Manifest:
    """Write the embedded dataset in the prepared format (`source` is unused: it ships inside)."""
    arrays, preprocessing = build_arrays()
    return write_prepared(
        Path(out),
        dataset=NAME,
        classes=CLASSES,
        arrays=arrays,
        preprocessing=preprocessing,
        source="embedded: UCI Multiple Features (CC BY 4.0), see igm_cli/data/mfeat/README.md",
    )


def load_in_memory(views: tuple[str, ...] = MODALITIES) -> PreparedDataset:
    """The prepared dataset without touching the disk (what `igm train` uses by default)."""
    arrays, preprocessing = build_arrays(views)
    splits = {s: SplitArrays({v: a[v] for v in views}, a["labels"]) for s, a in arrays.items()}
    manifest = Manifest(
        dataset=NAME,
        classes=CLASSES,
        modalities={v: {"shape": list(arrays["train"][v].shape[1:]), "dtype": "float32"} for v in views},
        splits={
            s: {"size": len(a["labels"]), "class_counts": np.bincount(a["labels"], minlength=10).tolist()}
            for s, a in arrays.items()
        },
        preprocessing=preprocessing,
        versions={},
        checksums={},
        source="embedded (in memory)",
    )
    return PreparedDataset(manifest, splits, None)
