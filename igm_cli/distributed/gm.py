"""GM under torchrun: Ȳ summed over ranks before the eigen-decomposition, T broadcast from rank 0 (Eq. 2–4).

Each rank accumulates Σ_t z̄_t z̄_tᵀ over the whole global batches it owns; the sum over
ranks is the single-process Ȳ (up to the order of a float64 sum). Rank 0's Ȳ and T are
broadcast so every rank applies bitwise the same T.
"""

from __future__ import annotations

import torch

from .world import World


def sum_covariances(world: World, cov: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ȳ per layer summed over ranks, identical everywhere (every rank owns at least one batch)."""
    for c in cov.values():  # the same layers in the same (forward) order on every rank
        world.all_reduce_(c)
        world.broadcast_(c)
    return cov


def broadcast_T(world: World, T: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rank 0's T on every rank (in place)."""
    for t in T.values():
        world.broadcast_(t)
    return T
