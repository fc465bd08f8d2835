"""`method: dgl`: Disentangled Gradient Learning (Wei, Luo, Luo, ICCV 2025).

Encoders per modality and one fusion module whose input is the detached features. The
unimodal logits of modality m are the same fusion module with every other feature set to
zero. One step: backward of α·Σ_m L_m (reaches the encoders and the fusion module), the
fusion module's gradients dropped, backward of L_fused (reaches only the fusion module).
Net effect: encoders get exactly α·∇Σ_m L_m, the fusion module exactly ∇L_fused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from igm_cli.engine.fusion import FUSED
from igm_cli.engine.stages import Stage
from igm_cli.models.shared import FusionModuleModel, feature_branches, feature_size

from .base import Method, Substep


class Dgl(Method):
    """Detached fusion module; encoders trained by the unimodal losses only."""

    name = "dgl"
    reads = ("baseline.epochs", "stages.epochs", "dgl", "sam.baseline_rho")

    @property
    def fusion(self) -> str:
        """Fused = the fusion module on all features."""
        return "module"

    def build_model(self, input_shapes, num_classes: int, configs: dict | None = None) -> nn.Module:
        """Encoders and the fusion module (`dgl.fusion`)."""
        dims = {m.name: feature_size(m) for m in self.preset.modalities}
        branches = feature_branches(self.preset, input_shapes, configs)
        return FusionModuleModel(branches, dims, num_classes, self.preset.dgl.fusion)

    ddp_wrap = False  # two backward passes through one forward: gradients all-reduced by igm

    def train_modules(self, model: nn.Module, stage: Stage) -> list[nn.Module]:
        """Encoders and fusion module."""
        return [model]

    def loss_modules(self, model: nn.Module, stage: Stage) -> list[nn.Module]:
        """Every loss passes through exactly one Linear of the fusion module per term."""
        fusion = model.fusion
        return [fusion] if isinstance(fusion, nn.Linear) else list(fusion.values())

    def substeps(self, model: nn.Module, stage: Stage, params: list[nn.Parameter]) -> list[Substep]:
        """One step with DGL's gradient routing."""
        fusion_params = list(model.fusion.parameters())
        alpha = self.preset.dgl.alpha

        def gradients(inputs, labels, second_pass: bool) -> torch.Tensor:
            features = {m: model.branch(m)(inputs[m]) for m in stage.active}
            unimodal = sum(F.cross_entropy(model.fuse_features({m: z}), labels) for m, z in features.items())
            (alpha * unimodal).backward()
            for p in fusion_params:  # the unimodal losses must not train the fusion module
                p.grad = None
            fused = F.cross_entropy(model.fuse_features({m: z.detach() for m, z in features.items()}), labels)
            fused.backward()
            return fused.detach()

        return [Substep(FUSED, params, gradients)]
