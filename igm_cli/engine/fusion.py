"""Late fusion f(p⁽¹⁾, …, p⁽ᵐ⁾) of per-branch softmax outputs (paper §3.1)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def mean_fusion(probs: list[torch.Tensor]) -> torch.Tensor:
    """Average of the branch probabilities; each is (B, C)."""
    return torch.stack(probs).mean(0)


def entropy_fusion(probs: list[torch.Tensor]) -> torch.Tensor:
    """MLA's dynamic fusion, per sample: w_m ∝ exp(−H_m), H_m the entropy of branch m.

    Equivalent to exp(max_j H_j − H_m)/Σ; confident branches weigh more for that sample.
    """
    stacked = torch.stack(probs)  # (m, B, C)
    entropy = -(stacked * stacked.clamp_min(1e-12).log()).sum(-1)  # (m, B)
    weights = torch.softmax(-entropy, dim=0).unsqueeze(-1)  # (m, B, 1)
    return (weights * stacked).sum(0)


FUSIONS: dict[str, Callable[[list[torch.Tensor]], torch.Tensor]] = {
    "mean": mean_fusion,
    "entropy": entropy_fusion,
}


def fuse(logits: dict[str, torch.Tensor], how: str) -> torch.Tensor:
    """Fused class probabilities (B, C) from per-branch logits."""
    return FUSIONS[how]([torch.softmax(z, dim=-1) for z in logits.values()])
