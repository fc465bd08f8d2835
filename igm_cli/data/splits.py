"""Seeded, deterministic splits: stratified fractions, stratified or grouped hold-outs."""

from __future__ import annotations

import numpy as np

from ..errors import DataError


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> dict[str, np.ndarray]:
    """Split indices into train/val/test with the given fractions, stratified by label.

    The result depends only on `labels`, `fractions` and `seed`; indices are sorted.
    """
    from sklearn.model_selection import train_test_split  # lazily: prepare workers never need it

    train_f, val_f, test_f = fractions
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=test_f, stratify=labels, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_f / (train_f + val_f), stratify=labels[rest], random_state=seed
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def holdout_size(n: int, fraction: float) -> int:
    """round(n · fraction), but at least 1 and at most n - 1 (for n ≥ 2)."""
    return min(max(1, round(n * fraction)), n - 1) if n >= 2 else 0


def stratified_holdout(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held): `size` indices held out class by class in proportion, seeded; both sorted.

    Class quotas are n_c · size / n rounded by largest remainder (ties broken by the seeded
    generator), so the total is exactly `size`; members are drawn by a seeded permutation.
    Unlike sklearn's splitter it works when `size` is smaller than the number of classes.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * size / len(labels)
    take = np.floor(quota).astype(np.int64)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(classes)), -(quota - take)))  # largest remainder first
    take[order[: size - take.sum()]] += 1
    held = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)]
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), held), held


def group_holdout(groups: np.ndarray, n_groups: int, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """(rest, held, held groups): every member of `n_groups` seeded-random groups is held out."""
    names = np.unique(groups)
    chosen = sorted(np.random.default_rng(seed).permutation(names)[:n_groups].tolist())
    held = np.flatnonzero(np.isin(groups, chosen))
    return np.setdiff1d(np.arange(len(groups)), held), held, chosen


def require_nonempty(plan: dict[str, list], what: str) -> None:
    """Every split must hold at least one clip; otherwise a DataError listing the sizes."""
    if any(not part for part in plan.values()):
        sizes = ", ".join(f"{split} {len(part)}" for split, part in plan.items())
        raise DataError(f"too few {what} for three non-empty splits ({sizes})")
