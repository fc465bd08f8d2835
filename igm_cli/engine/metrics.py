"""Accuracy, macro-F1 and MAP (mean over classes of average precision) via scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

METRICS = ("accuracy", "macro_f1", "map")


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics of class probabilities (N, C) against integer labels (N,)."""
    predictions = probs.argmax(1)
    num_classes = probs.shape[1]
    present = np.unique(labels)
    onehot = np.eye(num_classes, dtype=np.int64)[labels]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ap = [average_precision_score(onehot[:, c], probs[:, c]) for c in present]
        macro_f1 = f1_score(labels, predictions, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(macro_f1),
        "map": float(np.mean(ap)),
    }
