"""Fused accuracy and macro-F1 when one modality is missing for a share r of samples, or noisy at σ.

Missing: a seeded permutation of the samples; at r the first round(r·N) of it lack the
modality (the masks are nested, so a curve moves with r only). Noisy: the modality's
branch runs once per σ > 0 on its corrupted input (corruption.py); the other branches'
stored outputs are reused. r = 0 and σ = 0 are `igm eval`'s fused prediction itself.
Summary per curve: the trapezoid area over [0, 1] and the drop from 0 to 0.5.
"""

from __future__ import annotations

from typing import Any

import torch

from igm_cli.engine.batches import SplitBatches
from igm_cli.engine.evaluate import eval_mode
from igm_cli.models.shared import FusionModuleModel

from .classwise import accuracy_and_macro_f1
from .corruption import Corrupter, Corruption, stored_rows
from .outputs import Fuser

LEVELS = tuple(i / 10 for i in range(11))
"""r (share of samples missing the modality) and σ (noise level) of every curve."""
METRICS = ("accuracy", "macro_f1")


def missing_mask(n: int, share: float, seed: int, device: torch.device) -> torch.Tensor:
    """(N,) bool: the first round(share·N) samples of a seeded permutation."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[: round(share * n)]] = True
    return mask.to(device)


@torch.no_grad()
def corrupted_output(
    model, batches: SplitBatches, modality: str, batch: int, corrupter: Corrupter, feature: bool
) -> torch.Tensor:
    """One pass of `modality`'s branch over the split on corrupted input: its logits, or feature.

    The caller holds the model in eval mode (once per sweep: entering it walks every module).
    """
    out = []
    for x in stored_rows(batches.inputs[modality], batches.device, batch):
        if corrupter.before_pipeline:
            x = corrupter(x)
        z = model.prepare({modality: x}, train=False)[modality]
        if not corrupter.before_pipeline:
            z = corrupter(z)
        out.append((model.branch(modality)(z) if feature else model({modality: z})[modality]).float())
    return torch.cat(out)


def curve_summary(values: list[float]) -> dict[str, float]:
    """Trapezoid area over LEVELS and the drop from level 0 to level 0.5 (positive = worse)."""
    steps = zip(values[:-1], values[1:], LEVELS[:-1], LEVELS[1:], strict=True)
    area = sum((a + b) / 2 * (x1 - x0) for a, b, x0, x1 in steps)
    return {"area": area, "drop_at_0.5": values[0] - values[LEVELS.index(0.5)]}


def scored(predictions: list[torch.Tensor], labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Points and summary of one curve, per metric."""
    points = [accuracy_and_macro_f1(p, labels, num_classes) for p in predictions]
    curve: dict[str, Any] = {metric: [p[metric] for p in points] for metric in METRICS}
    curve["summary"] = {metric: curve_summary(curve[metric]) for metric in METRICS}
    return curve


def robustness(
    model,
    fuser: Fuser,
    batches: SplitBatches,
    corruptions: dict[str, Corruption],
    batch: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Both curves of every branch of one checkpoint on one split."""
    labels = fuser.outputs.labels
    n, device = len(labels), labels.device
    clean = fuser.predictions(fuser.full)
    feature = fuser.module and isinstance(model, FusionModuleModel)
    modalities = {}
    for i, m in enumerate(fuser.modalities):
        missing = [fuser.missing(m, missing_mask(n, r, seed, device)) for r in LEVELS]
        noisy = [clean]
        with eval_mode(model):
            for sigma in LEVELS[1:]:
                corrupter = Corrupter(corruptions[m], sigma, seed * 1009 + i, device)
                output = corrupted_output(model, batches, m, batch, corrupter, feature)
                noisy.append(fuser.replaced(m, output))
        modalities[m] = {
            "missing": scored(missing, labels, fuser.num_classes),
            "noise": scored(noisy, labels, fuser.num_classes) | {"corruption": corruptions[m].describe()},
        }
    return {"levels": list(LEVELS), "missing_means": fuser.rule, "modalities": modalities}
