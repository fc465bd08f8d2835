"""`method: joint`: every branch at once on the loss of the fused prediction (or the sum of CEs).

The usual joint training where modality imbalance shows; SAM only if `sam.baseline_rho` > 0.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from igm_cli.engine.fusion import fuse
from igm_cli.engine.stages import Stage

from .base import Method, Substep, cross_entropy_substep


class Joint(Method):
    """All branches, one stage, one optimizer step per batch."""

    name = "joint"
    reads = ("head", "baseline.epochs", "stages.epochs", "baseline.joint_loss", "sam.baseline_rho", "fusion")

    def substeps(self, model: nn.Module, stage: Stage, params: list[nn.Parameter]) -> list[Substep]:
        """One step on the fused loss (`baseline.joint_loss: fused`) or the sum of branch CEs."""

        def loss_of(inputs, labels):
            logits = {m: model.branch(m)(inputs[m]) for m in stage.active}
            if self.preset.baseline.joint_loss == "fused":
                return F.nll_loss(fuse(logits, self.fusion).clamp_min(1e-12).log(), labels)
            return sum(F.cross_entropy(z, labels) for z in logits.values())

        return [cross_entropy_substep("joint", params, loss_of)]
