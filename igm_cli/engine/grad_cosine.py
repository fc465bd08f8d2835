"""Histogram of the gradient change cos(∇W, ∇W') per step and layer (paper Figure 1).

∇W' is the gradient after a method's modification: ∇W·T for IGM (Eq. 9), ∇W·Pᵀ for MLA.
Counts live in one (layers, K) integer tensor on the weights' device and every step adds
to it with device ops only, so training never waits for the host; `meter_state`
(checkpoints, once per epoch) and `stage_histogram` (the stage record) read it back.

The K bins are fixed and finer towards 1 (uniform in log(1 − cos), four per decade):
T's eigenvalues lie in [e^−τ, 1], so with the paper's τ = 0.4 every IGM cosine is above
0.98, while MLA's projector moves gradients much further. The last bin, [1 − 1e-6, 1],
is "unchanged" (T = I, or a zero gradient, which nothing can change).
"""

from __future__ import annotations

import torch

PER_DECADE, DECADES = 4, 6
COSINE_EDGES: list[float] = [-1.0] + [1.0 - 10 ** (-k / PER_DECADE) for k in range(PER_DECADE * DECADES + 1)]
COSINE_EDGES.append(1.0)
"""K + 1 = 27 ascending edges: [-1, 0, 1 − 10^−0.25, …, 1 − 10^−6, 1]."""

Grad = torch.Tensor | None

METER_PREFIX = "grad_cos."
"""Keys of the counts in a method's `meter_state` (beside other accumulators)."""


class GradCosine:
    """Per stage: a fixed-bin histogram of cos(before, after) for each named layer."""

    def __init__(self, edges: list[float] | None = None):
        self.edges = list(edges or COSINE_EDGES)
        self.keys: list[str] = []
        self.counts: torch.Tensor | None = None  # (layers, K) int64 on the weights' device
        self._rows: dict[tuple[str, ...], torch.Tensor] = {}
        self._edges_on: torch.Tensor | None = None

    def begin_stage(self, keys: list[str], device: torch.device | str, meter: dict | None = None) -> None:
        """Start a stage's histogram over `keys` ("<modality>.<layer>"); `meter` continues one."""
        self.keys = list(keys)
        self.counts = torch.zeros(len(keys), len(self.edges) - 1, dtype=torch.int64, device=device)
        self._edges_on = torch.tensor(self.edges, dtype=torch.float64, device=device)
        self._rows = {}
        for row, key in enumerate(self.keys):
            saved = (meter or {}).get(METER_PREFIX + key)
            if saved is not None and len(saved) == self.counts.shape[1]:
                self.counts[row] = torch.tensor([int(c) for c in saved], dtype=torch.int64)

    @torch.no_grad()
    def observe(self, keys: list[str], before: list[Grad], after: list[Grad]) -> None:
        """Add one cosine per layer: `before` is the gradient as computed, `after` as modified.

        `before` must not be modified in place by the modification (project_grad_ assigns a
        new tensor). Layers without a gradient this step are skipped.
        """
        triples = zip(keys, before, after, strict=True)
        present = [(k, b, a) for k, b, a in triples if b is not None and a is not None]
        if not present or self.counts is None:
            return
        names = tuple(k for k, _, _ in present)
        b = [x for _, x, _ in present]
        a = [x for _, _, x in present]
        dots = torch.stack([torch.vdot(x.reshape(-1), y.reshape(-1)) for x, y in zip(b, a, strict=True)])
        norms = torch.stack(torch._foreach_norm(b)) * torch.stack(torch._foreach_norm(a))
        dots, norms = dots.double(), norms.double()
        cosine = torch.where(norms == 0, torch.ones_like(dots), dots / norms)  # 0/0: nothing to change
        cosine = cosine.clamp(-1.0, 1.0)
        bins = (torch.bucketize(cosine, self._edges_on, right=True) - 1).clamp(0, self.counts.shape[1] - 1)
        flat = self._row_of(names) * self.counts.shape[1] + bins
        self.counts.view(-1).index_add_(0, flat, torch.isfinite(cosine).to(flat.dtype))  # NaN: not counted

    def _row_of(self, names: tuple[str, ...]) -> torch.Tensor:
        """Row indices of `names` as a device tensor, made once per set of names (no copy per step)."""
        rows = self._rows.get(names)
        if rows is None:
            index = [self.keys.index(n) for n in names]
            rows = self._rows[names] = torch.tensor(index, dtype=torch.int64, device=self.counts.device)
        return rows

    def meter_state(self) -> dict[str, list[int]]:
        """The counts so far, for a checkpoint taken mid-stage (one host read)."""
        if self.counts is None:
            return {}
        table = self.counts.cpu().tolist()
        return {METER_PREFIX + key: row for key, row in zip(self.keys, table, strict=True)}

    def stage_histogram(self) -> dict[str, object] | None:
        """The stage record's `grad_cos_hist`: {"edges": [K+1], "counts": {key: [K]}}; None without layers."""
        if self.counts is None or not self.keys:
            return None
        counts = {k[len(METER_PREFIX) :]: v for k, v in self.meter_state().items()}
        return {"edges": list(self.edges), "counts": counts}
