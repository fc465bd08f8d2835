"""Evaluation of every branch and of the fused prediction on one split."""

from __future__ import annotations

import numpy as np
import torch

from igm_cli.models import LateFusionModel

from .batches import SplitBatches
from .fusion import fuse
from .metrics import classification_metrics


@torch.no_grad()
def predict(
    model: LateFusionModel, batches: SplitBatches, batch_size: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-branch logits (N, C) over a whole split, in split order, and the labels."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {m: [] for m in batches.modalities}
    labels = []
    try:
        for inputs, y in batches.iterate(batch_size):
            for m, z in model(inputs).items():
                chunks[m].append(z.float())
            labels.append(y)
    finally:
        model.train(was_training)
    return {m: torch.cat(z) for m, z in chunks.items()}, torch.cat(labels)


def score(logits: dict[str, torch.Tensor], labels: torch.Tensor, fusion: str) -> dict[str, dict[str, float]]:
    """Metrics and loss for each branch and for the fused prediction ('fused')."""
    y = labels.cpu().numpy()
    results = {}
    fused = fuse(logits, fusion)
    for name, probs in [*((m, torch.softmax(z, -1)) for m, z in logits.items()), ("fused", fused)]:
        loss = torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels)
        results[name] = {**classification_metrics(probs.cpu().numpy(), y), "loss": float(loss)}
    return results


def evaluate_model(
    model: LateFusionModel, batches: SplitBatches, batch_size: int, fusion: str
) -> dict[str, dict[str, float]]:
    """Predict then score; the keys are the modalities and 'fused'."""
    logits, labels = predict(model, batches, batch_size)
    return score(logits, labels, fusion)


def fused_probs(logits: dict[str, torch.Tensor], fusion: str) -> np.ndarray:
    """Fused probabilities as a numpy array (N, C)."""
    return fuse(logits, fusion).cpu().numpy()
