"""Accuracy, macro-F1, per-class accuracy and the confusion matrix of hard predictions, in torch.

The robustness sweep scores a few hundred predictions per checkpoint; a bincount on the
device is what keeps that cheap. Macro-F1 follows scikit-learn's `f1_score(average="macro",
zero_division=0)`: classes present in the labels or the predictions, F1 = 2TP/(2TP+FP+FN).
"""

from __future__ import annotations

import torch


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts (C, C): row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def accuracy_and_macro_f1(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """{"accuracy", "macro_f1"} of hard predictions (N,) against labels (N,)."""
    cm = confusion_matrix(predictions, labels, num_classes).double()
    tp = cm.diagonal()
    predicted, true = cm.sum(0), cm.sum(1)
    present = (predicted + true) > 0
    denominator = predicted + true  # = 2TP + FP + FN
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), torch.zeros_like(tp))
    return {
        "accuracy": float(tp.sum() / cm.sum().clamp_min(1)),
        "macro_f1": float(f1[present].mean()) if bool(present.any()) else 0.0,
    }


def per_class_accuracy(cm: torch.Tensor) -> list[float | None]:
    """Share of each class's samples predicted correctly (recall); None for a class with no samples."""
    true = cm.sum(1)
    return [float(cm[c, c] / n) if n else None for c, n in enumerate(true.tolist())]
