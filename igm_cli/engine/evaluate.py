"""Evaluation of every branch and of the fused prediction on one split."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from igm_cli.models import LateFusionModel

from .batches import SplitBatches
from .fusion import FUSED, fuse
from .metrics import classification_metrics


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode inside, and every submodule's own train/eval flag restored after.

    `module.train(was_training)` would not do: during a stage only the active branch is
    in training mode, and a blanket restore would flip the others (or all) of them.
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@torch.no_grad()
def predict(
    model: LateFusionModel, batches: SplitBatches, batch_size: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-branch logits (N, C) over a whole split, in split order, and the labels."""
    chunks: dict[str, list[torch.Tensor]] = {m: [] for m in batches.modalities}
    labels = []
    with eval_mode(model):
        for inputs, y in batches.iterate(batch_size):
            for m, z in model(model.prepare(inputs, train=False)).items():
                chunks.setdefault(m, []).append(z.float())  # + 'fused' for a fusion module
            labels.append(y)
    return {m: torch.cat(z) for m, z in chunks.items()}, torch.cat(labels)


def score(
    logits: dict[str, torch.Tensor], labels: torch.Tensor, fusion: str, batch: int | None = None
) -> dict[str, dict[str, float]]:
    """Metrics and loss for each branch and for the fused prediction ('fused')."""
    y = labels.cpu().numpy()
    results = {}
    fused = fuse(logits, fusion, batch)
    branches = ((m, torch.softmax(z, -1)) for m, z in logits.items() if m != FUSED)
    for name, probs in [*branches, ("fused", fused)]:
        loss = torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels)
        results[name] = {**classification_metrics(probs.cpu().numpy(), y), "loss": float(loss)}
    return results


def evaluate_model(
    model: LateFusionModel, batches: SplitBatches, batch_size: int, fusion: str
) -> dict[str, dict[str, float]]:
    """Predict then score; the keys are the modalities and 'fused'."""
    logits, labels = predict(model, batches, batch_size)
    return score(logits, labels, fusion, batch_size)
