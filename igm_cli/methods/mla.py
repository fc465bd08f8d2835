"""`method: mla`: MLA (Zhang et al., CVPR 2024) as its paper states it.

Encoders per modality and one shared head Linear(d, C). Every batch makes one optimizer
step per modality, in order: that modality's forward through the shared head, CE,
backward, the head's weight gradient G ← G Pᵀ, step, then the OWM projector update with
x̄ the batch mean of that modality's head input:

    P ← P − (P x̄)(P x̄)ᵀ / (α + x̄ᵀ P x̄)      (P₀ = I, one P over the head's input space)

`mla.projection: released` reproduces the authors' code: the projection never runs and
the test-time entropy weights are taken over the batch axis (see `deviations`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from igm_cli.engine.grad_cosine import GradCosine
from igm_cli.engine.stages import Stage
from igm_cli.errors import PresetError
from igm_cli.models.shared import SharedHeadModel, feature_branches, feature_size
from igm_cli.preset_schema import Preset

from .base import BatchesFor, Method, Substep

RELEASED = [
    {
        "switch": "mla.projection=released",
        "what": "no gradient projection (the code's projector never matches the head's parameter name)",
    },
    {
        "switch": "mla.projection=released",
        "what": "entropy fusion over the batch axis: one weight per modality and evaluation batch",
    },
]


def owm_update(P: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """P − (P x)(P x)ᵀ/(α + xᵀ P x), the recursive projector with the scalar denominator."""
    px = P @ x
    return P - torch.outer(px, px) / (alpha + x @ px)


class Mla(Method):
    """Shared head, per-batch alternation over modalities, OWM projection of the head gradient."""

    name = "mla"
    reads = ("baseline.epochs", "stages.epochs", "mla", "sam.baseline_rho", "fusion")

    def __init__(self, preset: Preset):
        super().__init__(preset)
        dims = {m.name: feature_size(m) for m in preset.modalities}
        if len(set(dims.values())) > 1:
            sizes = ", ".join(f"{m} {d}" for m, d in dims.items())
            odd = next(m for m in preset.modalities if dims[m.name] != next(iter(dims.values())))
            field = f"modalities.{odd.name}.{'adapter' if odd.adapter else 'encoder'}"
            raise PresetError(
                f"{field}: method mla shares one head, so every branch needs the same feature size d "
                f"(got {sizes}; an adapter such as [{next(iter(dims.values()))}] maps a feature to it)"
            )
        self.dim = next(iter(dims.values()))
        self.P = torch.eye(self.dim, dtype=torch.float64)
        self.cosine = GradCosine()  # cos(G, G Pᵀ) per step and modality (paper Figure 1)

    @property
    def fusion(self) -> str:
        """The preset's fusion; `released` evaluates with the code's batch-axis weights."""
        return "entropy_batch" if self.preset.mla.projection == "released" else self.preset.fusion

    def deviations(self) -> list[dict[str, str]]:
        """The released code's departures from the paper, when `mla.projection: released`."""
        return [dict(d) for d in RELEASED] if self.preset.mla.projection == "released" else []

    def build_model(self, input_shapes, num_classes: int, configs: dict | None = None) -> nn.Module:
        """Encoders and the shared head."""
        return SharedHeadModel(feature_branches(self.preset, input_shapes, configs), self.dim, num_classes)

    ddp_wrap = False  # one step per modality through the shared head: gradients all-reduced by igm

    def train_modules(self, model: nn.Module, stage: Stage) -> list[nn.Module]:
        """Everything trains (the optimizer steps only what has a gradient)."""
        return [model]

    def loss_modules(self, model: nn.Module, stage: Stage) -> list[nn.Module]:
        """Every loss passes through the shared head."""
        return [model.head]

    def substeps(self, model: nn.Module, stage: Stage, params: list[nn.Parameter]) -> list[Substep]:
        """One step per modality: its encoder and the shared head on its cross-entropy."""
        self.P = self.P.to(model.head.weight.device)
        head = list(model.head.parameters())

        def step_of(m: str) -> Substep:
            substep = Substep(m, [*model.branch(m).parameters(), *head], None)

            def gradients(inputs, labels, second_pass: bool) -> torch.Tensor:
                z = model.branch(m)(inputs[m])
                loss = F.cross_entropy(model.head(z), labels)
                loss.backward()
                if not second_pass:  # x̄ at θ, not at SAM's θ + ε
                    rows = z.detach().reshape(-1, z.shape[-1]).to(torch.float64)
                    substep.memo["xbar"] = self.world.batch_mean(rows)  # of the global batch
                return loss.detach()

            substep.gradients = gradients
            return substep

        self._head = model.head
        return [step_of(m) for m in stage.active]

    @torch.no_grad()
    def before_step(self, substep: Substep) -> None:
        """G ← G Pᵀ on the shared head's weight (paper); nothing when `released` or `off`."""
        grad = self._head.weight.grad
        if self.preset.mla.projection == "paper" and grad is not None:
            projected = grad @ self.P.T.to(grad.dtype)
            self.cosine.observe([f"{substep.key}.head"], [grad], [projected])
            grad.copy_(projected)

    def after_step(self, substep: Substep) -> None:
        """The OWM update with the modality's batch-mean head input."""
        if self.preset.mla.projection == "paper":
            self.P = owm_update(self.P, substep.memo["xbar"].to(self.P.device), self.preset.mla.alpha)

    def begin_stage(self, model: nn.Module, stage: Stage, meter: dict | None) -> list[str]:
        """Start the gradient-cosine histogram of the shared head (only when P acts)."""
        if self.preset.mla.projection == "paper":
            keys = [f"{m}.head" for m in stage.active]
            self.cosine.begin_stage(keys, model.head.weight.device, meter)
        return []

    def end_stage(self, model: nn.Module, stage: Stage, batches_for: BatchesFor) -> dict[str, Any]:
        """The stage record: no T; the histogram of cos(G, G Pᵀ) when the projection ran."""
        report = super().end_stage(model, stage, batches_for)
        histogram = self.cosine.stage_histogram()
        if histogram is not None:
            report["grad_cos_hist"] = histogram
        return report

    def meter_state(self) -> dict[str, list[float]]:
        """The histogram's counts so far, for a stage resumed mid-way."""
        return self.cosine.meter_state()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The projector P (float64), so a resumed run continues it."""
        return {"mla.P": self.P.detach().cpu().contiguous()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore P."""
        if "mla.P" in tensors:
            self.P = tensors["mla.P"].to(torch.float64)
