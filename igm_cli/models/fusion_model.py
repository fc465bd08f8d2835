"""LateFusionModel: one unshared branch (encoder φ_m + head) per modality (paper §3.1)."""

from __future__ import annotations

import torch
from torch import nn

from igm_cli.errors import DataError
from igm_cli.preset_schema import Modality, Preset

from .clip_input import prepare_shared
from .encoders import build_encoder
from .heads import build_head
from .inputs import VectorInput, build_input
from .text_image import WeightsUnavailable


class Branch(nn.Module):
    """Input pipeline, encoder, head; forward takes prepared inputs and returns logits."""

    def __init__(self, encoder: nn.Module, head: nn.Sequential, inputs: nn.Module | None = None):
        super().__init__()
        self.inputs = inputs if inputs is not None else VectorInput()
        self.encoder = encoder
        self.head = head

    def prepare(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """Stored batch → encoder input (augmented when `train`)."""
        return self.inputs(x, train)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of this branch alone."""
        return self.head(self.encoder(x))


class LateFusionModel(nn.Module):
    """Branches keyed by modality; forward returns per-branch logits (fusion is separate)."""

    def __init__(self, branches: dict[str, Branch]):
        super().__init__()
        self.branches = nn.ModuleDict(branches)

    @property
    def modalities(self) -> list[str]:
        """Modality names in stage order."""
        return list(self.branches.keys())

    def branch(self, modality: str) -> Branch:
        """The branch of one modality (its DDP wrapper while a data-parallel step runs)."""
        routes = self.__dict__.get("branch_routes")
        if routes and modality in routes:
            return routes[modality]
        return self.branches[modality]

    def head_linears(self, modality: str) -> list[tuple[str, nn.Linear]]:
        """(name, Linear) of one branch's head in forward order; names like `head.3`."""
        head = self.branches[modality].head
        return [(f"head.{n}", m) for n, m in head.named_children() if isinstance(m, nn.Linear)]

    def prepare(self, inputs: dict[str, torch.Tensor], train: bool) -> dict[str, torch.Tensor]:
        """Run every present modality's input pipeline (augmentation when `train`).

        Clip modalities on one grid share each sample's random window and crop (clip_input.py).
        """
        present = {m: x for m, x in inputs.items() if m in self.branches}
        return prepare_shared({m: self.branches[m].inputs for m in present}, present, train)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-branch logits for every modality present in `inputs`."""
        return {m: self.branches[m](inputs[m]) for m in self.branches if m in inputs}


def build_model(
    preset: Preset,
    input_shapes: dict[str, list[int]],
    num_classes: int,
    configs: dict[str, dict] | None = None,
) -> LateFusionModel:
    """Build the model a preset describes, for the given per-modality input shapes.

    `configs` (modality → transformers config, from a checkpoint) rebuilds pretrained
    encoders without reading their weights: the checkpoint's weights replace them anyway.
    """
    branches = {
        m.name: Branch(
            _encoder(m, input_shapes[m.name], (configs or {}).get(m.name)),
            build_head(m.encoder.feature_dim, preset.head.widths, num_classes, m.adapter),
            build_input(m.input),
        )
        for m in preset.modalities
    }
    return LateFusionModel(branches)


def encoder_configs(model: LateFusionModel) -> dict[str, dict]:
    """Modality → transformers config of every branch whose encoder has one (BERT, ResNet-50, CLIP)."""
    return {m: b.encoder.hf_config() for m, b in model.branches.items() if hasattr(b.encoder, "hf_config")}


def _encoder(modality: Modality, input_shape: list[int], config: dict | None = None) -> nn.Module:
    """The modality's encoder; unloadable pretrained weights are a one-line DataError naming the key."""
    try:
        return build_encoder(modality.encoder, input_shape, config)
    except WeightsUnavailable as e:
        key = f"modalities.{modality.name}.encoder.weights"
        raise DataError(
            f"{key}={e.weights}: cannot load these weights ({e.detail}); offline, a hub id needs a local "
            f"copy: give a save_pretrained folder with --set {key}=PATH (or null for random init)"
        ) from None
