"""FlatProjector: holds the covariances Ȳ and matrices T per modality and GM layer (Eq. 2–5).

`collect` runs the no-grad pass after a modality's stage (`accumulate` sums Ȳ, `set_covariances`
builds T); `begin_stage` pairs the active branch's GM layers (`gm.scope`: the head's Linears,
or a share of the branch from the classifier back, convolutions included) with the previous
modality's T; `apply` right-multiplies their weight gradients.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from igm_cli.distributed.gm import broadcast_T, sum_covariances
from igm_cli.distributed.world import World
from igm_cli.engine.evaluate import eval_mode
from igm_cli.models import LateFusionModel

from .gm_scope import GmLayer, Scope, branch_scope, pair_key
from .projection import layer_covariance, project_grad_, projection_matrix, trace_ratio, working_copy


@dataclass
class ProjectedLayer:
    """One active GM layer (head Linear or encoder Conv2d) and the T that acts on its weight gradient."""

    name: str
    linear: GmLayer  # kept under this name: a conv is a Linear on its patches
    T: torch.Tensor  # (in, in) or (in·kh·kw, in·kh·kw), the weight's dtype and device
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
        scope: str = "head",
        fraction: float = 0.3,
    ):
        self.tau = tau
        self.guards = guards  # False: T exactly as the released code (recipe: reference)
        self.enabled = enabled
        self.centred = centred  # MIE option: per-batch covariance instead of z̄ z̄ᵀ
        self.last_hidden_only = last_hidden_only  # MIE option: T only on the layer before the classifier
        self.scope, self.fraction = scope, fraction  # gm.scope, gm.fraction
        self.cov: dict[str, dict[str, torch.Tensor]] = {}  # modality → layer → (d, d) float64
        self.T: dict[str, dict[str, torch.Tensor]] = {}  # modality → layer → (d, d) float64
        self._active: list[ProjectedLayer] = []
        self.pairs: dict[str, str | None] = {}  # active layer → `<source>.<layer>` or None, this stage
        self._strength: dict[str, float] = {}  # active layer → trace(T)/d of the T acting on it

    def layers(self, model: LateFusionModel, modality: str) -> Scope:
        """The GM layers of one branch under `gm.scope` (forward order)."""
        return branch_scope(model.branch(modality), self.scope, self.fraction)

    @torch.no_grad()
    def collect(
        self,
        model: LateFusionModel,
        modality: str,
        batches: Iterable[torch.Tensor],
        world: World | None = None,
    ) -> None:
        """Accumulate Ȳ at every GM layer's input, then build T (Eq. 2, 4).

        Under torchrun (`world`) Ȳ is summed over the ranks first and T is broadcast from rank 0.
        """
        cov = self.accumulate(model, modality, batches)
        distributed = world is not None and world.distributed
        self.set_covariances(modality, sum_covariances(world, cov) if distributed else cov)
        if distributed:
            broadcast_T(world, self.T[modality])

    @torch.no_grad()
    def accumulate(
        self, model: LateFusionModel, modality: str, batches: Iterable[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Ȳ = Σ_t (term of batch t) per GM layer, one no-grad pass, model in eval mode (Eq. 2).

        The sums stay on the training device (no host sync per batch); a term is z̄ z̄ᵀ of
        a Linear's input or PᵀP of a convolution's batch-mean patches (projection.py).
        """
        branch = model.branch(modality)
        cov: dict[str, torch.Tensor] = {}

        def hook(name: str):
            def add(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                y = layer_covariance(module, args[0], self.centred)
                cov[name] = cov[name].add_(y) if name in cov else y

            return add

        layers = self.layers(model, modality).layers
        handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers]
        try:
            with eval_mode(branch):
                for x in batches:
                    branch(x)
        finally:
            for handle in handles:
                handle.remove()
        return cov

    def set_covariances(self, modality: str, cov: dict[str, torch.Tensor]) -> None:
        """Keep one modality's Ȳ and build its T per layer: one float64 eigh each, on Ȳ's device."""
        self.cov[modality] = cov
        self.T[modality] = {name: projection_matrix(c, self.tau, self.guards) for name, c in cov.items()}

    def begin_stage(self, model: LateFusionModel, active: str, source: str | None) -> list[str]:
        """Pair the active branch's GM layers with `source`'s T; returns the paired layer names.

        Layers are aligned from the classifier backwards and a pair is made only where the
        weights' input sides agree (the image head of the text–image presets has an extra
        first layer; a 1-channel and a 3-channel stem differ). No T of `source` yet means
        T = I: nothing is paired.
        """
        self._active, self.pairs, self._strength = [], {}, {}
        if not self.enabled or source is None or source not in self.T:
            return []
        mine = self.layers(model, active).layers
        theirs = [(n, layer) for n, layer in self.layers(model, source).layers if n in self.T[source]]
        pairs = scope_pairs(mine, theirs)
        self.pairs = {name: (f"{source}.{theirs}" if theirs else None) for name, theirs in pairs.items()}
        for name, linear in mine[::-1]:
            if pairs[name] is None:
                continue
            T = self.T[source][pairs[name]]
            self._strength[name] = trace_ratio(T)
            weight = linear.weight
            zero = torch.zeros((), device=weight.device, dtype=torch.float64)
            T_w = working_copy(T, weight)
            self._active.append(ProjectedLayer(name, linear, T_w, zero.clone(), zero.clone()))
        if self.last_hidden_only:  # mine is in forward order: the classifier is last
            before = mine[-2][1] if len(mine) > 1 else None
            self._active = [p for p in self._active if p.linear is before]
            kept = {p.name for p in self._active}
            self.pairs = {n: (src if n in kept else None) for n, src in self.pairs.items()}
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

    def layer_report(self) -> list[dict]:
        """Per GM layer of the stage: its partner, T's size and strength, the norm share removed."""
        removed = self.stage_report()
        sizes = {p.name: p.T.shape[0] for p in self._active}
        return [
            {
                "layer": name,
                "T_of": source,
                "T_size": sizes.get(name),
                "T_trace_ratio": self._strength.get(name) if name in sizes else None,
                "removed_share": removed.get(name),
            }
            for name, source in self.pairs.items()
        ]

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
                table[modality] = dict(sorted(layers.items(), key=lambda kv: _layer_order(kv[0])))


def pair_layers(
    mine: list[tuple[str, Hashable]], theirs: list[tuple[str, Hashable]]
) -> dict[str, str | None]:
    """Active layer → the source layer whose T acts on it, or None (paper §3.2, last paragraph).

    Both lists are (name, input side) in forward order; they are aligned from the classifier
    backwards and a pair is made only where the input sides agree, so an extra first layer
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


def scope_pairs(mine: list[tuple[str, GmLayer]], theirs: list[tuple[str, GmLayer]]) -> dict[str, str | None]:
    """pair_layers for GM layers: by position from the classifier back and the weight's input side.

    A Linear pairs by in_features, a convolution by (in channels, kernel), so T always has
    the side the gradient is multiplied on.
    """
    return pair_layers([(n, pair_key(m)) for n, m in mine], [(n, pair_key(m)) for n, m in theirs])


def _layer_order(layer: str) -> list[tuple[int, int | str]]:
    """Natural order of module names (`head.3` before `head.10`); safetensors keys come back sorted."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in layer.split(".")]
