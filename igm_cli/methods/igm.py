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

from igm_cli.engine.flat_projector import FlatProjector
from igm_cli.engine.stages import Stage, StageSchedule, previous_modality
from igm_cli.preset_schema import Preset

from .base import BatchesFor, Method, Substep, cross_entropy_substep


class Igm(Method):
    """IGM as the paper states it; MIE (mie.py) shares all of it."""

    name = "igm"
    reads = ("head", "stages.epochs", "gm", "sam.rho", "fusion")

    def __init__(self, preset: Preset):
        super().__init__(preset)
        self.projector = FlatProjector(preset.gm.tau, enabled=preset.gm.enabled)

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
        """∇W ← ∇W T on the paired head layers (Eq. 9)."""
        self.projector.apply()

    def begin_stage(self, model: nn.Module, stage: Stage, meter: dict | None) -> list[str]:
        """Pair the active head with the source's T (only for modalities in `gm.targets`)."""
        (m,) = stage.active
        targets = self.preset.gm.targets
        source = stage.source if targets is None or m in targets else None
        paired = self.projector.begin_stage(model, m, source)
        if meter:
            self.projector.load_meter(meter)
        return paired

    def end_stage(self, model: nn.Module, stage: Stage, batches_for: BatchesFor) -> dict[str, Any]:
        """Collect Ȳ and T of the modality that just trained (Algorithm 1, lines 11–13)."""
        removed = self.projector.stage_report()
        if self.projector.enabled:
            (m,) = stage.active
            self.projector.collect(model, m, batches_for(m))
        return {
            "gm_removed_share": removed,
            "T_trace_ratio": {m: self.projector.strength(m) for m in stage.active},
        }

    def meter_state(self) -> dict[str, list[float]]:
        """The stage's gradient-norm accumulators."""
        return self.projector.meter_state()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every T and Ȳ (gm.T.<modality>.<layer>, gm.cov.<...>)."""
        return self.projector.state_tensors()

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore T and Ȳ."""
        self.projector.load_state_tensors(tensors)
