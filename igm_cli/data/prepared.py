"""PreparedDataset: the reader of prepared data; memory-maps .npy files so training never decodes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .manifest import Manifest, array_path, read_manifest, rows_path


class SharedRows:
    """A modality whose samples share stored items: `table[index[i]]` is sample i's input.

    Behaves like an (N, *shape) array for what training reads: len, shape, nbytes (of the N
    samples), fancy row indexing, and np.asarray (which materialises the N rows).
    """

    def __init__(self, table: np.ndarray, index: np.ndarray):
        self.table, self.index = table, np.asarray(index, dtype=np.int64)
        self.dtype = table.dtype

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, *item shape)."""
        return (len(self.index), *self.table.shape[1:])

    @property
    def nbytes(self) -> int:
        """Bytes of the N samples once gathered."""
        return len(self.index) * self.table[:1].nbytes if len(self.table) else 0

    def __getitem__(self, rows) -> np.ndarray:
        return np.asarray(self.table[self.index[rows]])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[np.arange(len(self.index))]
        return out.astype(dtype) if dtype is not None else out


@dataclass
class SplitArrays:
    """Inputs per modality and labels of one split; arrays may be memory-mapped."""

    inputs: dict[str, np.ndarray]  # modality → (N, *shape)
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class PreparedDataset:
    """A prepared dataset: its manifest and its splits."""

    manifest: Manifest
    splits: dict[str, SplitArrays]
    root: Path | None = None

    @classmethod
    def open(cls, root: Path | str) -> PreparedDataset:
        """Open a prepared directory, memory-mapping every array."""
        root = Path(root)
        manifest = read_manifest(root)
        splits = {}
        for split, info in manifest.splits.items():
            labels = _load(array_path(root, split, "labels"))
            inputs = {m: _open_input(root, split, m) for m in manifest.modalities}
            for name, array in [("labels", labels), *inputs.items()]:
                if len(array) != info.size:
                    raise DataError(
                        f"{root}: {split}/{name}.npy has {len(array)} rows, manifest says {info.size}"
                    )
            splits[split] = SplitArrays(inputs, labels.astype(np.int64, copy=False))
        return cls(manifest, splits, root)

    def split(self, name: str) -> SplitArrays:
        """One split by name."""
        if name not in self.splits:
            raise DataError(f"split {name!r} not in prepared data (have {', '.join(self.splits)})")
        return self.splits[name]

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return len(self.manifest.classes)


def _open_input(root: Path, split: str, modality: str) -> np.ndarray | SharedRows:
    """The memory-mapped array of one modality, or a SharedRows view when it has a row index."""
    array = _load(array_path(root, split, modality))
    index_file = rows_path(root, split, modality)
    if not index_file.is_file():
        return array
    index = _load(index_file)
    if len(index) and (index.min() < 0 or index.max() >= len(array)):
        raise DataError(f"{root}: {index_file.name} of {split} points outside {modality}.npy")
    return SharedRows(array, index)


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"prepared array missing: {path}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"corrupt prepared array {path}: {str(e).splitlines()[0]}") from None
