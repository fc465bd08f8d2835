"""SAM (Foret et al. 2021; paper Eq. 6–8) as a two-phase helper with explicit verbs.

The trainer calls: backward → `perturb` (θ ← θ + ρ g/‖g‖, one global norm over the
active parameters) → second forward/backward under `frozen_bn_stats` → `restore`
(θ copied back bit for bit) → projector → optimizer step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


class SamStep:
    """Perturbs parameters to θ + ε with ε = ρ g/‖g‖₂ and restores them exactly."""

    def __init__(self, rho: float):
        self.rho = rho
        self._saved: list[torch.Tensor] = []
        self._perturbed: list[nn.Parameter] = []
        self._buffers: list[torch.Tensor] = []
        self._buffer_key: list[tuple] = []

    @property
    def enabled(self) -> bool:
        """ρ = 0 means a plain step: no perturbation, no second pass."""
        return self.rho > 0

    @torch.no_grad()
    def perturb(self, params: Sequence[nn.Parameter]) -> torch.Tensor:
        """Save θ and move to θ + ε; returns ‖g‖ (a 0-d tensor, no host sync).

        The gradients are consumed: they are scaled in place into ε (the trainer zeroes
        them next). θ is saved into buffers kept from step to step, so a step allocates
        nothing.
        """
        with_grad = [p for p in params if p.grad is not None]
        grads = [p.grad for p in with_grad]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        self._saved = self._buffers_for(with_grad)
        torch._foreach_copy_(self._saved, with_grad)
        self._perturbed = with_grad
        torch._foreach_mul_(grads, self.rho / (norm + 1e-12))  # grads become ε
        torch._foreach_add_(with_grad, grads)
        return norm

    def _buffers_for(self, params: list[nn.Parameter]) -> list[torch.Tensor]:
        """Saved-θ buffers matching `params`, reused while the parameter set stays the same."""
        key = [(id(p), p.shape, p.dtype, p.device) for p in params]
        if key != self._buffer_key:
            self._buffers = [torch.empty_like(p) for p in params]
            self._buffer_key = key
        return self._buffers

    @torch.no_grad()
    def realized(self) -> dict[str, float]:
        """What θ + ε really changed, after float rounding (call between perturb and restore).

        `moved_share`: share of entries that changed; `relative_size`: ‖(θ+ε) − θ‖/‖θ‖.
        With the paper's ρ = 1e-10 or 1e-15 both are ~0 in float32: SAM's second pass
        then recomputes (nearly) the first pass's gradient.
        """
        diffs = [(p.double() - s.double()) for p, s in zip(self._perturbed, self._saved, strict=True)]
        changed = sum(int((d != 0).sum()) for d in diffs)
        total = sum(p.numel() for p in self._perturbed)
        moved_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d) for d in diffs]))
        weight_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(self._saved))).double()
        return {
            "moved_share": changed / total if total else 0.0,
            "relative_size": float(moved_norm / weight_norm) if weight_norm > 0 else 0.0,
        }

    @torch.no_grad()
    def restore(self) -> None:
        """Copy the saved θ back (exact, unlike subtracting ε)."""
        torch._foreach_copy_(self._perturbed, self._saved)
        self._perturbed = []

    def restore_pending(self) -> None:
        """Restore θ if a step was cut between `perturb` and `restore` (interrupts)."""
        if self._perturbed:
            self.restore()


def batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer below `module` (collect once, not per step)."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def frozen_bn_stats(module: nn.Module | list[nn.modules.batchnorm._BatchNorm]) -> Iterator[None]:
    """Normalise with batch statistics but leave running statistics untouched (SAM pass 2).

    In training mode BatchNorm with `track_running_stats=False` uses the batch's own
    statistics and updates nothing, which is exactly pass one without its side effect.
    """
    norms = batch_norms(module) if isinstance(module, nn.Module) else module
    previous = [m.track_running_stats for m in norms]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, flag in zip(norms, previous, strict=True):
            m.track_running_stats = flag
