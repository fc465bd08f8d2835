"""Encoder registry φ_m (STYLE §11): preset `encoder.name` → builder(spec, input_shape) → module.

Every encoder maps a batch (B, *input_shape) to features (B, spec.dim).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from igm_cli.presets import EncoderSpec, MlpEncoder


def build_mlp(spec: MlpEncoder, input_shape: list[int]) -> nn.Module:
    """Flatten → [Linear → BatchNorm → ReLU]* → Dropout → Linear(…, dim)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for hidden in spec.hidden:
        layers.append(nn.Linear(width, hidden))
        if spec.batchnorm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.ReLU())
        width = hidden
    if spec.dropout > 0:
        layers.append(nn.Dropout(spec.dropout))
    layers.append(nn.Linear(width, spec.dim))
    return nn.Sequential(*layers)


ENCODERS: dict[str, Callable[[EncoderSpec, list[int]], nn.Module]] = {"mlp": build_mlp}


def build_encoder(spec: EncoderSpec, input_shape: list[int]) -> nn.Module:
    """Build the encoder registered under `spec.name`."""
    return ENCODERS[spec.name](spec, input_shape)
