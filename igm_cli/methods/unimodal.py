"""`method: unimodal`: one branch alone (`baseline.modality`), the per-modality reference."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from igm_cli.engine.stages import Stage, unimodal_modality

from .base import Method, Substep, cross_entropy_substep


class Unimodal(Method):
    """One branch, one stage, plain cross-entropy."""

    name = "unimodal"
    reads = ("head", "baseline.epochs", "stages.epochs", "baseline.modality", "sam.baseline_rho")

    def trained_modalities(self) -> list[str]:
        """Only the chosen branch is built."""
        return [unimodal_modality(self.preset)]

    def substeps(self, model: nn.Module, stage: Stage, params: list[nn.Parameter]) -> list[Substep]:
        """Cross-entropy of the one branch."""
        (m,) = stage.active
        return [cross_entropy_substep(m, params, lambda x, y: F.cross_entropy(model.branch(m)(x[m]), y))]
