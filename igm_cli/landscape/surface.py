"""Loss surfaces f(α) = L(θ + αδ) and f(α, β) = L(θ + αδ + βη) on a grid (Li et al. 2018, §3).

The grid is filled point by point in row-major order and each point is marked done, so a
run that stops part-way continues where it stopped (the store keeps the marks).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .objective import Objective


def grid_axes(grid: int, span: float) -> np.ndarray:
    """`grid` evenly spaced coefficients in [−span, span] (odd grids contain 0)."""
    return np.linspace(-span, span, grid)


class Perturbation:
    """Moves parameters to θ + Σ_k c_k d_k; leaving the `with` block restores θ bit for bit."""

    def __init__(self, params: list[torch.Tensor], directions: list[list[torch.Tensor]]):
        self.params = params
        self.directions = directions
        self.origin = [p.detach().clone() for p in params]

    @torch.no_grad()
    def set(self, coefficients: list[float]) -> None:
        """θ ← θ₀ + Σ_k c_k d_k (each parameter written in place, so the model sees it)."""
        terms = [(c, d) for c, d in zip(coefficients, self.directions, strict=True) if c]
        for i, p in enumerate(self.params):
            if not terms:
                p.copy_(self.origin[i])
                continue
            torch.add(self.origin[i], terms[0][1][i], alpha=terms[0][0], out=p)  # one pass, not copy + add
            for c, direction in terms[1:]:
                p.add_(direction[i], alpha=c)

    @torch.no_grad()
    def restore(self) -> None:
        """θ ← θ₀ exactly."""
        for p, p0 in zip(self.params, self.origin, strict=True):
            p.copy_(p0)

    def __enter__(self) -> Perturbation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def evaluate_grid(
    objective: Objective,
    perturbation: Perturbation,
    axes: list[np.ndarray],
    surface: dict[str, np.ndarray],
    on_point: Callable[[], None] | None = None,
) -> None:
    """Fill the points of `surface` not yet marked done.

    Args:
        objective: the loss and accuracy at the current weights.
        perturbation: moves the weights along the directions (one per axis).
        axes: the coefficients of each direction.
        surface: arrays of shape (len(axes[0]), …): `loss`, `accuracy`, `done` (0/1),
            updated in place.
        on_point: called after every finished point (progress, periodic saving).
    """
    with perturbation:
        for index in np.ndindex(surface["done"].shape):
            if surface["done"][index]:
                continue
            perturbation.set([float(axes[k][i]) for k, i in enumerate(index)])
            surface["loss"][index], surface["accuracy"][index] = objective.evaluate()
            surface["done"][index] = 1
            if on_point is not None:
                on_point()
