"""Models of the methods that do not use one head per branch: MLA's shared head, DGL's fusion module.

Both keep `branches` (input pipeline + encoder, head = Identity, so a branch outputs its
feature z_m) and `prepare` from LateFusionModel; forward returns per-branch logits, and
the fusion-module model adds its fused logits under 'fused'.
"""

from __future__ import annotations

import torch
from torch import nn

from igm_cli.engine.fusion import FUSED
from igm_cli.preset_schema import Modality, Preset

from .fusion_model import Branch, LateFusionModel, _encoder
from .inputs import build_input


def feature_size(m: Modality) -> int:
    """Size d of a branch's feature: the last adapter width, else the encoder's feature size."""
    return m.adapter[-1] if m.adapter else m.encoder.feature_dim


def adapter(m: Modality) -> nn.Module:
    """The modality's adapter Linears (no activation), or Identity: part of the feature branch."""
    sizes = [m.encoder.feature_dim, *m.adapter]
    if len(sizes) == 1:
        return nn.Identity()
    return nn.Sequential(*(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)))


def feature_branches(
    preset: Preset, input_shapes: dict[str, list[int]], configs: dict[str, dict] | None = None
) -> dict[str, Branch]:
    """One branch per modality whose output is the feature z_m: encoder, then its adapter if any."""
    return {
        m.name: Branch(
            _encoder(m, input_shapes[m.name], (configs or {}).get(m.name)), adapter(m), build_input(m.input)
        )
        for m in preset.modalities
    }


class SharedHeadModel(LateFusionModel):
    """MLA: encoders per modality and one head Linear(d, C) shared by all of them."""

    def __init__(self, branches: dict[str, Branch], dim: int, num_classes: int):
        super().__init__(branches)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality logits head(z_m)."""
        return {m: self.head(self.branches[m](inputs[m])) for m in self.branches if m in inputs}


class FusionModuleModel(LateFusionModel):
    """DGL: encoders per modality and one fusion module over all features.

    concat: Linear(Σd, C) on [z_1, …, z_m]; sum: Σ_m Linear(d_m, C)(z_m). The unimodal
    logits of m are the same module with every other feature replaced by zeros.
    """

    def __init__(self, branches: dict[str, Branch], dims: dict[str, int], num_classes: int, how: str):
        super().__init__(branches)
        self.how, self.dims = how, dims
        if how == "concat":
            self.fusion = nn.Linear(sum(dims.values()), num_classes)
        else:
            self.fusion = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in dims.items()})

    def fuse_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The fusion module on a full set of features (missing ones are zeros of the right size)."""
        any_z = next(iter(features.values()))
        full = [
            features[m] if m in features else any_z.new_zeros(any_z.shape[0], d) for m, d in self.dims.items()
        ]
        if self.how == "concat":
            return self.fusion(torch.cat(full, dim=-1))
        return sum(self.fusion[m](z) for m, z in zip(self.dims, full, strict=True))

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Unimodal logits of every present modality, and the fused logits under 'fused'."""
        features = {m: self.branches[m](inputs[m]) for m in self.branches if m in inputs}
        out = {m: self.fuse_features({m: z}) for m, z in features.items()}
        out[FUSED] = self.fuse_features(features)
        return out
