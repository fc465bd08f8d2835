"""Encoder registry φ_m (STYLE §11): preset `encoder.name` → builder(spec, input_shape) → module.

Every encoder maps a batch (B, *input_shape) to features (B, spec.dim).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from igm_cli.preset_schema import EncoderSpec, I3dEncoder, MlpEncoder, ResNetEncoder

from .clip import build_clip_text, build_clip_vision
from .text_image import build_bert, build_resnet50


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


class ResNetFeatures(nn.Module):
    """transformers' ResNetModel as φ: images (B, C, H, W) or frames (B, T, C, H, W) → (B, d)."""

    def __init__(self, spec: ResNetEncoder, channels: int):
        super().__init__()
        from transformers import ResNetConfig, ResNetModel  # heavy: imported only when used

        config = ResNetConfig(
            num_channels=channels,
            embedding_size=spec.embedding,
            hidden_sizes=list(spec.widths),
            depths=list(spec.depths),
            layer_type="basic",
            hidden_act="relu",
            downsample_in_first_stage=False,
        )
        self.net = ResNetModel(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features averaged over space (and time, for frames)."""
        if x.dim() == 5:
            B, T = x.shape[:2]
            maps = self.net(x.flatten(0, 1)).last_hidden_state  # (B*T, d, h, w)
            return maps.unflatten(0, (B, T)).mean(dim=(1, 3, 4))
        return self.net(x).last_hidden_state.mean(dim=(2, 3))  # (B, d)


def build_resnet(spec: ResNetEncoder, input_shape: list[int]) -> nn.Module:
    """Channels come from the stored shape: (F, T) spectrogram → 1, (T, C, H, W) frames → C."""
    channels = input_shape[-3] if len(input_shape) == 4 else 1
    return ResNetFeatures(spec, channels)


def build_i3d(spec: I3dEncoder, input_shape: list[int]) -> nn.Module:
    """I3D on stored clips (T, C, H, W); converted public weights are loaded when `spec.weights` is set."""
    from pathlib import Path

    from .i3d import I3D
    from .i3d_weights import load_i3d_weights

    model = I3D(input_shape[1], spec.width_divisor, spec.pool_frames)
    if spec.weights:
        load_i3d_weights(model, Path(spec.weights).expanduser())
    return model


ENCODERS: dict[str, Callable[[EncoderSpec, list[int]], nn.Module]] = {
    "mlp": build_mlp,
    "resnet18": build_resnet,
    "i3d": build_i3d,
    "bert": build_bert,
    "resnet50": build_resnet50,
    "clip-text": build_clip_text,
    "clip-vision": build_clip_vision,
}


def build_encoder(spec: EncoderSpec, input_shape: list[int], config: dict | None = None) -> nn.Module:
    """Build the encoder registered under `spec.name` (`config`: a stored transformers config to rebuild)."""
    if config is not None:
        return ENCODERS[spec.name](spec, input_shape, config=config)
    return ENCODERS[spec.name](spec, input_shape)
