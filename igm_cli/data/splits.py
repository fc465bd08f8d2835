"""Seeded, stratified, deterministic train/val/test splits."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> dict[str, np.ndarray]:
    """Split indices into train/val/test with the given fractions, stratified by label.

    The result depends only on `labels`, `fractions` and `seed`; indices are sorted.
    """
    train_f, val_f, test_f = fractions
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=test_f, stratify=labels, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_f / (train_f + val_f), stratify=labels[rest], random_state=seed
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
