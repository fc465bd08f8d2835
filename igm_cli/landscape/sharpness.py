"""Sharpness of a minimum: the loss rise within a radius, and the top Hessian eigenvalue.

The eigenvalue comes from power iteration with Hessian-vector products (Pearlmutter
1994), as Li et al. (NeurIPS 2018, §7) use to check what their plots show. The rise is
measured along filter-normalised directions, so it does not change when a ReLU network's
weights are rescaled; the eigenvalue does (Dinh et al. 2017). Both are reported and the
verdict says whether they agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .objective import Objective

RADIUS_FRACTION = 0.25  # r = 0.25·span, and never less than one grid step


def sharpness_radius(span: float, grid: int) -> float:
    """The radius r within which the rise is measured."""
    return max(RADIUS_FRACTION * span, 2 * span / (grid - 1))


def rise_within(loss: np.ndarray, axes: list[np.ndarray], centre: float, radius: float) -> dict[str, float]:
    """Largest and mean L(θ + αδ + βη) − L(θ) over grid points with 0 < ‖(α, β)‖ ≤ r."""
    mesh = np.meshgrid(*axes, indexing="ij")
    distance = np.sqrt(sum(m**2 for m in mesh))
    inside = (distance > 0) & (distance <= radius * (1 + 1e-9))
    if not inside.any():
        return {"max_rise_within_r": float("nan"), "mean_rise_within_r": float("nan")}
    rise = loss[inside] - centre
    return {"max_rise_within_r": float(rise.max()), "mean_rise_within_r": float(rise.mean())}


def hessian_vector_product(
    objective: Objective, params: list[torch.Tensor], v: list[torch.Tensor]
) -> list[torch.Tensor]:
    """H·v of the objective's mean loss w.r.t. `params`, accumulated batch by batch."""
    out = [torch.zeros_like(p) for p in params]
    for term in objective.loss_terms():
        grads = torch.autograd.grad(term, params, create_graph=True)
        dot = sum((g * u).sum() for g, u in zip(grads, v, strict=True))
        for acc, h in zip(out, torch.autograd.grad(dot, params), strict=True):
            acc.add_(h)
    return out


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(sum((x * y).sum() for x, y in zip(a, b, strict=True)))


def top_hessian_eigenvalue(
    objective: Objective,
    params: list[torch.Tensor],
    *,
    iterations: int = 30,
    tolerance: float = 1e-3,
    seed: int = 0,
) -> dict[str, Any]:
    """Power iteration v ← Hv/‖Hv‖ from a seeded start; λ = vᵀHv (Rayleigh quotient).

    Finds the eigenvalue of largest magnitude (the top one at a minimum, where H is
    nearly positive semi-definite). Stops when λ changes by less than `tolerance`·|λ|.
    """
    generator = torch.Generator().manual_seed(seed)
    v = [torch.randn(tuple(p.shape), generator=generator).to(p) for p in params]
    norm = _dot(v, v) ** 0.5
    v = [x / norm for x in v]
    eigenvalue, converged, done = float("nan"), False, 0
    while done < iterations and not converged:
        hv = hessian_vector_product(objective, params, v)
        new, norm = _dot(v, hv), _dot(hv, hv) ** 0.5
        converged = abs(new - eigenvalue) <= tolerance * abs(new) or norm == 0
        eigenvalue, done = new, done + 1
        v = [x / norm for x in hv] if norm else v
    return {"eigenvalue": eigenvalue, "iterations": done, "converged": converged}


def flattest(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Which checkpoint is flattest by rise and by top eigenvalue, and whether they agree."""
    by_rise = min(rows, key=lambda r: r["max_rise_within_r"])["name"]
    by_hessian = min(rows, key=lambda r: r["hessian_top_eigenvalue"])["name"]
    if len(rows) == 1:
        verdict = "one checkpoint: nothing to compare"
    elif by_rise == by_hessian:
        verdict = f"{by_rise} is flattest by both the loss rise within r and the top Hessian eigenvalue"
    else:
        verdict = (
            f"the measures disagree: {by_rise} has the smallest loss rise within r, "
            f"{by_hessian} the smallest top Hessian eigenvalue"
        )
    return {"by_rise": by_rise, "by_hessian": by_hessian, "agree": by_rise == by_hessian, "verdict": verdict}
