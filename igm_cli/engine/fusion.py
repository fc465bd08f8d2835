"""Late fusion of per-branch outputs (paper §3.1): on softmaxes (mean, entropy) or logits (MLA)."""

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


def sample_entropy_weights(logits: list[torch.Tensor]) -> torch.Tensor:
    """MLA's per-sample weights w_m = exp(max_j H_j − H_m)/Σ, H_m each sample's softmax entropy; (m, B, 1)."""
    probs = torch.stack([torch.softmax(z, -1) for z in logits])
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)  # (m, B)
    return torch.softmax(-entropy, dim=0).unsqueeze(-1)


def entropy_logit_fusion(logits: list[torch.Tensor]) -> torch.Tensor:
    """MLA's dynamic fusion as its paper states it: Σ_m w_m z_m per sample, then softmax."""
    return torch.softmax((sample_entropy_weights(logits) * torch.stack(logits)).sum(0), -1)


def batch_axis_entropy_fusion(logits: list[torch.Tensor], batch: int | None = None) -> torch.Tensor:
    """MLA's released code: softmax over the batch axis, entropy summed over the batch.

    One weight per modality per evaluation batch of `batch` rows (the whole set if None),
    applied to the logits; kept only to reproduce that code (`mla.projection: released`).
    """
    stacked = torch.stack(logits)  # (m, N, C)
    out = []
    step = batch or stacked.shape[1]
    for start in range(0, stacked.shape[1], step):
        chunk = stacked[:, start : start + step]
        p = torch.softmax(chunk, dim=1)  # over the batch axis, as released
        entropy = -(p * p.clamp_min(1e-12).log()).sum((1, 2))  # (m,)
        w = torch.exp(entropy.max() - entropy)
        w = (w / w.sum()).view(-1, 1, 1)
        out.append(torch.softmax((w * chunk).sum(0), -1))
    return torch.cat(out)


FUSED = "fused"
"""Key of a fusion module's own logits in a model's outputs (DGL)."""

FUSIONS: dict[str, Callable[[list[torch.Tensor]], torch.Tensor]] = {
    "mean": mean_fusion,
    "entropy": entropy_fusion,
}
LOGIT_FUSIONS: dict[str, Callable[[list[torch.Tensor]], torch.Tensor]] = {
    "entropy_logits": entropy_logit_fusion,
    "entropy_batch": batch_axis_entropy_fusion,
}
FUSION_NAMES = (*FUSIONS, *LOGIT_FUSIONS, "module")
"""Every fusion `fuse` knows: on probabilities (FUSIONS), on logits, or a fusion module's own."""


def fuse(logits: dict[str, torch.Tensor], how: str, batch: int | None = None) -> torch.Tensor:
    """Fused class probabilities (B, C) from per-branch logits (`module`: the model's own fused logits)."""
    if how == "module":
        return torch.softmax(logits[FUSED], dim=-1)
    branches = [z for m, z in logits.items() if m != FUSED]
    if how == "entropy_batch":
        return batch_axis_entropy_fusion(branches, batch)
    if how in LOGIT_FUSIONS:
        return LOGIT_FUSIONS[how](branches)
    return FUSIONS[how]([torch.softmax(z, dim=-1) for z in branches])
