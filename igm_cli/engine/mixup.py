"""Mixup (Zhang et al. 2018) as the released IGM code uses it (released-code.md §6).

One λ ~ Beta(α, α) and one permutation per batch; only the active modality's input is
mixed, x̃ = λx + (1 − λ)x[idx], and the loss is λ·CE(o, y) + (1 − λ)·CE(o, y[idx]) per
sample. A draw is a value, so a test can fix it and both SAM passes can share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MixupDraw:
    """λ and the batch permutation of one mixup step."""

    lam: float
    index: torch.Tensor  # (B,) long, on the batch's device


def draw_mixup(batch: int, alpha: float, device: torch.device) -> MixupDraw:
    """λ ~ Beta(α, α) (torch's CPU generator, saved in checkpoints) and a permutation of the batch."""
    concentration = torch.tensor(float(alpha), dtype=torch.float64)
    lam = float(torch.distributions.Beta(concentration, concentration).sample())
    index = torch.randperm(batch, device=device)
    return MixupDraw(lam, index)


def mix(x: torch.Tensor, draw: MixupDraw) -> torch.Tensor:
    """λx + (1 − λ)x[idx] over the batch dimension."""
    return draw.lam * x + (1 - draw.lam) * x[draw.index]


def mixup_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, draw: MixupDraw | None) -> torch.Tensor:
    """Per-sample λ·CE(o, y) + (1 − λ)·CE(o, y[idx]); plain CE without a draw."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    if draw is None:
        return ce
    return draw.lam * ce + (1 - draw.lam) * F.cross_entropy(logits, labels[draw.index], reduction="none")
