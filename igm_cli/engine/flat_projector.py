"""FlatProjector: holds the covariances Ȳ and matrices T per modality and head layer (Eq. 2–5).

`collect` runs the no-grad pass after a modality's stage; `begin_stage` pairs the active
head's Linears with the previous modality's T; `apply` right-multiplies their gradients.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from igm_cli.engine.evaluate import eval_mode
from igm_cli.models import LateFusionModel

from .projection import batch_covariance, batch_mean_outer, project_grad_, projection_matrix, trace_ratio


@dataclass
class ProjectedLayer:
    """One active head Linear and the T that acts on its weight gradient."""

    name: str
    linear: nn.Linear
    T: torch.Tensor  # (in, in), the weight's dtype and device
    grad_sq: torch.Tensor  # Σ ‖∇W‖²  over the stage's steps (on device, no sync per step)
    projected_sq: torch.Tensor  # Σ ‖∇W T‖²


class FlatProjector:
    """Covariances and T per (modality, layer); applies the previous modality's T."""

    def __init__(
        self,
        tau: float,
        enabled: bool = True,
        centred: bool = False,
        last_hidden_only: bool = False,
        guards: bool = True,
    ):
        self.tau = tau
        self.guards = guards  # False: T exactly as the released code (recipe: reference)
        self.enabled = enabled
        self.centred = centred  # MIE option: per-batch covariance instead of z̄ z̄ᵀ
        self.last_hidden_only = last_hidden_only  # MIE option: T only on the layer before the classifier
        self.cov: dict[str, dict[str, torch.Tensor]] = {}  # modality → layer → (d, d) float64
        self.T: dict[str, dict[str, torch.Tensor]] = {}  # modality → layer → (d, d) float64
        self._active: list[ProjectedLayer] = []

    @torch.no_grad()
    def collect(self, model: LateFusionModel, modality: str, batches: Iterable[torch.Tensor]) -> None:
        """Accumulate Ȳ = Σ_t z̄_t z̄_tᵀ at every head Linear's input, then build T (Eq. 2, 4)."""
        branch = model.branch(modality)
        layers = model.head_linears(modality)
        cov: dict[str, torch.Tensor] = {}

        def hook(name: str):
            def accumulate(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                y = batch_covariance(args[0]) if self.centred else batch_mean_outer(args[0])
                cov[name] = cov[name] + y if name in cov else y

            return accumulate

        handles = [linear.register_forward_pre_hook(hook(name)) for name, linear in layers]
        try:
            with eval_mode(branch):
                for x in batches:
                    branch(x)
        finally:
            for handle in handles:
                handle.remove()
        self.cov[modality] = cov
        self.T[modality] = {name: projection_matrix(c, self.tau, self.guards) for name, c in cov.items()}

    def begin_stage(self, model: LateFusionModel, active: str, source: str | None) -> list[str]:
        """Pair the active head's Linears with `source`'s T; returns the paired layer names.

        Heads are aligned from the classifier backwards and a pair is made only where the
        input sizes agree (the image head of the text–image presets has an extra first
        layer). No T of `source` yet means T = I: nothing is paired.
        """
        self._active = []
        if not self.enabled or source is None or source not in self.T:
            return []
        mine = model.head_linears(active)
        pairs = pair_layers([(n, lin.in_features) for n, lin in mine],
                            [(n, T.shape[0]) for n, T in self.T[source].items()])  # fmt: skip
        for name, linear in mine[::-1]:
            if pairs[name] is None:
                continue
            T = self.T[source][pairs[name]]
            weight = linear.weight
            zero = torch.zeros((), device=weight.device, dtype=torch.float64)
            T_w = T.to(device=weight.device, dtype=weight.dtype)
            self._active.append(ProjectedLayer(name, linear, T_w, zero.clone(), zero.clone()))
        if self.last_hidden_only:  # mine is in forward order: the classifier is last
            before = mine[-2][1] if len(mine) > 1 else None
            self._active = [p for p in self._active if p.linear is before]
        self._active.reverse()  # forward order, for reports
        return [p.name for p in self._active]

    @torch.no_grad()
    def apply(self) -> None:
        """∇W ← ∇W T for every paired layer (Eq. 9), tracking how much norm T removes."""
        layers = [p for p in self._active if p.linear.weight.grad is not None]
        if not layers:
            return
        before = torch._foreach_norm([p.linear.weight.grad for p in layers])  # one fused call, no sync
        for p in layers:
            project_grad_(p.linear.weight, p.T)
        after = torch._foreach_norm([p.linear.weight.grad for p in layers])
        for p, b, a in zip(layers, before, after, strict=True):
            p.grad_sq += b.double().square()
            p.projected_sq += a.double().square()

    def paired_weights(self) -> list[tuple[str, nn.Parameter]]:
        """(layer name, weight) of every layer `apply` modifies this stage, in forward order."""
        return [(p.name, p.linear.weight) for p in self._active]

    def stage_report(self) -> dict[str, float]:
        """Per paired layer: the share of gradient norm T removed, 1 − ‖∇W T‖/‖∇W‖ (pooled)."""
        report = {}
        for p in self._active:
            g2 = float(p.grad_sq)
            report[p.name] = 1.0 - (float(p.projected_sq) / g2) ** 0.5 if g2 > 0 else 0.0
        return report

    def meter_state(self) -> dict[str, list[float]]:
        """The stage's gradient-norm accumulators, for checkpoints taken mid-stage."""
        return {p.name: [float(p.grad_sq), float(p.projected_sq)] for p in self._active}

    def load_meter(self, meter: dict[str, list[float]]) -> None:
        """Continue the accumulators of a stage interrupted mid-way."""
        for p in self._active:
            if p.name in meter:
                p.grad_sq.fill_(meter[p.name][0])
                p.projected_sq.fill_(meter[p.name][1])

    def strength(self, modality: str) -> dict[str, float]:
        """trace(T)/d per layer of one modality's T (1 = identity)."""
        return {name: trace_ratio(T) for name, T in self.T.get(modality, {}).items()}

    # ------------------------------------------------------------ checkpoint state

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors under the checkpoint scheme gm.T.<modality>.<layer> and gm.cov.<...>."""
        out = {}
        for kind, table in (("T", self.T), ("cov", self.cov)):
            for modality, layers in table.items():
                for layer, tensor in layers.items():
                    out[f"gm.{kind}.{modality}.{layer}"] = tensor.detach().cpu().contiguous()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore from tensors saved by `state_tensors` (layer order is preserved)."""
        self.T, self.cov = {}, {}
        for key, tensor in tensors.items():
            if not key.startswith("gm."):
                continue
            _, kind, modality, layer = key.split(".", 3)
            table = self.T if kind == "T" else self.cov
            table.setdefault(modality, {})[layer] = tensor.to(torch.float64)
        for table in (self.T, self.cov):
            for modality, layers in table.items():
                table[modality] = dict(sorted(layers.items(), key=lambda kv: _layer_index(kv[0])))


def pair_layers(mine: list[tuple[str, int]], theirs: list[tuple[str, int]]) -> dict[str, str | None]:
    """Active head layer → the source layer whose T acts on it, or None (paper §3.2, last paragraph).

    Both heads are (name, input size) in forward order; they are aligned from the classifier
    backwards and a pair is made only where the input sizes agree, so an extra first layer
    (the image head's Linear(1000, 768)) receives no T.
    """
    pairs: dict[str, str | None] = {name: None for name, _ in mine}
    for (name, size), (theirs_name, their_size) in zip(mine[::-1], theirs[::-1], strict=False):
        if size == their_size:
            pairs[name] = theirs_name
    return pairs


def head_pairs(model: LateFusionModel, active: str, source: str) -> dict[str, str | None]:
    """pair_layers for two branches of a model: `active` layer → `<source>.<layer>` or None."""
    sizes = {m: [(n, lin.in_features) for n, lin in model.head_linears(m)] for m in (active, source)}
    pairs = pair_layers(sizes[active], sizes[source])
    return {name: (f"{source}.{theirs}" if theirs else None) for name, theirs in pairs.items()}


def _layer_index(layer: str) -> int:
    """`head.3` → 3, so layers sort in forward order (safetensors keys come back sorted)."""
    return int(layer.rsplit(".", 1)[-1])
