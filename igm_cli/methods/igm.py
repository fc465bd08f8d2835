"""`method: igm`: alternating unimodal stages, flat projection T of the previous modality, SAM.

Algorithm 1 of the paper: stage s trains modalities[s mod m]; after it, one no-grad pass
collects Ȳ and T of that modality (FlatProjector); the next modality's head weight
gradients are right-multiplied by it. `gm.targets` restricts GM to the listed modalities
(the paper's one-directional "w/o a-GM" / "w/o v-GM" ablations).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from igm_cli.engine.flat_projector import FlatProjector, scope_pairs
from igm_cli.engine.grad_cosine import GradCosine
from igm_cli.engine.stages import Stage, StageSchedule, previous_modality
from igm_cli.preset_schema import Preset

from .base import BatchesFor, Method, Substep, cross_entropy_substep


class Igm(Method):
    """IGM as the paper states it; MIE (mie.py) shares all of it."""

    name = "igm"
    reads = ("head", "stages.epochs", "gm", "sam.rho", "fusion")

    def __init__(self, preset: Preset):
        super().__init__(preset)
        gm = preset.gm
        self.projector = FlatProjector(gm.tau, enabled=gm.enabled, scope=gm.scope, fraction=gm.fraction)
        self.cosine = GradCosine()  # cos(∇W, ∇W T) per step and layer (paper Figure 1)
        self._observed: list[tuple[str, nn.Parameter]] = []

    def schedule(self) -> StageSchedule:
        """Stage s trains modalities[s mod m]; its T source is the previous modality in the cycle."""
        names = self.preset.modality_names
        stages = []
        for s, epochs in enumerate(self.preset.stages.epochs):
            j = s % len(names) + 1
            stages.append(Stage(s, (names[j - 1],), epochs, previous_modality(names, j)))
        return StageSchedule(stages)

    @property
    def sam_rho(self) -> float:
        """IGM's own SAM radius `sam.rho`."""
        return self.preset.sam.rho

    @property
    def uses_gm(self) -> bool:
        """T acts unless `gm.enabled: false`."""
        return self.projector.enabled

    def substeps(self, model: nn.Module, stage: Stage, params: list[nn.Parameter]) -> list[Substep]:
        """One cross-entropy step of the active branch."""
        (m,) = stage.active
        return [cross_entropy_substep(m, params, lambda x, y: F.cross_entropy(model.branch(m)(x[m]), y))]

    def before_step(self, substep: Substep) -> None:
        """∇W ← ∇W T on the paired head layers (Eq. 9); the change's cosine goes into the histogram."""
        keys = [k for k, _ in self._observed]
        before = [w.grad for _, w in self._observed]
        self.projector.apply()
        self.cosine.observe(keys, before, [w.grad for _, w in self._observed])

    def begin_stage(self, model: nn.Module, stage: Stage, meter: dict | None) -> list[str]:
        """Pair the active head with the source's T (only for modalities in `gm.targets`)."""
        (m,) = stage.active
        targets = self.preset.gm.targets
        source = stage.source if targets is None or m in targets else None
        paired = self.projector.begin_stage(model, m, source)
        if meter:
            self.projector.load_meter(meter)
        self._observed = [(f"{m}.{name}", w) for name, w in self._cosine_layers(model, stage)]
        device = next(model.branch(m).parameters()).device
        self.cosine.begin_stage([k for k, _ in self._observed], device, meter)
        return paired

    def _cosine_layers(self, model: nn.Module, stage: Stage) -> list[tuple[str, nn.Parameter]]:
        """The layers T acts on; while T = I (no T of the source yet, GM off) those it would act on."""
        paired = self.projector.paired_weights()
        if paired:
            return paired
        (m,) = stage.active
        mine = self.projector.layers(model, m).layers  # gm.scope's layers
        pairs = scope_pairs(mine, self.projector.layers(model, stage.source or m).layers)
        if self.projector.last_hidden_only:  # MIE's option: only the layer before the classifier
            mine = mine[-2:-1]
        return [(name, layer.weight) for name, layer in mine if pairs[name]]

    def end_stage(self, model: nn.Module, stage: Stage, batches_for: BatchesFor) -> dict[str, Any]:
        """Collect Ȳ and T of the modality that just trained (Algorithm 1, lines 11–13)."""
        removed = self.projector.stage_report()
        if self.projector.enabled:
            (m,) = stage.active
            self.projector.collect(model, m, batches_for(m), self.world)
        report: dict[str, Any] = {
            "gm_removed_share": removed,
            "T_trace_ratio": {m: self.projector.strength(m) for m in stage.active},
            "gm_pairs": self.projector.pairs or None,
            "gm_layers": self.projector.layer_report(),
            "gm_scope": self._scope_summary(model, stage),
        }
        histogram = self.cosine.stage_histogram()
        if histogram is not None:
            report["grad_cos_hist"] = histogram
        return report

    def _scope_summary(self, model: nn.Module, stage: Stage) -> dict[str, Any] | None:
        """gm.scope and what it covers of the trained branch (share of its parameters, layers)."""
        if not self.projector.enabled:
            return None
        (m,) = stage.active
        gm = self.preset.gm
        return {"scope": gm.scope, "fraction": gm.fraction if gm.scope == "fraction" else None,
                **self.projector.layers(model, m).summary()}  # fmt: skip

    def meter_state(self) -> dict[str, list[float]]:
        """The stage's gradient-norm accumulators and gradient-cosine counts."""
        return {**self.projector.meter_state(), **self.cosine.meter_state()}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every T and Ȳ (gm.T.<modality>.<layer>, gm.cov.<...>)."""
        return self.projector.state_tensors()

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore T and Ȳ."""
        self.projector.load_state_tensors(tensors)
