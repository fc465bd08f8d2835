"""CLIP text and vision towers via transformers (the encoders of the paper's Figure 5b).

Loaded from a local save_pretrained folder or hub id (a full CLIPModel folder works: the
tower's weights are taken from it), or randomly initialised from the preset's sizes.
"""

from __future__ import annotations

import torch
from torch import nn

from igm_cli.errors import PresetError
from igm_cli.preset_schema import ClipEncoder

from .text_image import HfConfigured, from_pretrained


class ClipTextFeatures(HfConfigured, nn.Module):
    """Token rows (B, 3, L) → final hidden state of the last real token (B, hidden)."""

    def __init__(self, spec: ClipEncoder, config: dict | None = None):
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel

        if config is not None:
            self.net = CLIPTextModel(CLIPTextConfig.from_dict(config))
        elif spec.weights:
            self.net = from_pretrained(CLIPTextModel, spec.weights)
        else:
            config = CLIPTextConfig(
                vocab_size=spec.vocab_size, hidden_size=spec.hidden, num_hidden_layers=spec.layers,
                num_attention_heads=spec.heads, intermediate_size=spec.intermediate,
                max_position_embeddings=spec.max_positions,
                bos_token_id=spec.vocab_size - 2, eos_token_id=spec.vocab_size - 1,
            )  # fmt: skip
            self.net = CLIPTextModel(config)
        _check_hidden(self.net.config.hidden_size, spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, L) int → (B, hidden); the last real token is CLIP's end-of-text with its tokenizer."""
        x = x.long()
        hidden = self.net(input_ids=x[:, 0], attention_mask=x[:, 1]).last_hidden_state  # (B, L, d)
        last = (x[:, 1].sum(dim=1) - 1).clamp_min(0)
        return hidden[torch.arange(len(x), device=x.device), last]


class ClipVisionFeatures(HfConfigured, nn.Module):
    """Images (B, 3, H, W) → the pooled class token (B, hidden); other sizes interpolate positions."""

    def __init__(self, spec: ClipEncoder, config: dict | None = None):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        if config is not None:
            self.net = CLIPVisionModel(CLIPVisionConfig.from_dict(config))
        elif spec.weights:
            self.net = from_pretrained(CLIPVisionModel, spec.weights)
        else:
            config = CLIPVisionConfig(
                hidden_size=spec.hidden, num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                intermediate_size=spec.intermediate, patch_size=spec.patch, image_size=spec.image_size,
            )  # fmt: skip
            self.net = CLIPVisionModel(config)
        _check_hidden(self.net.config.hidden_size, spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, hidden)."""
        return self.net(pixel_values=x, interpolate_pos_encoding=True).pooler_output


def _check_hidden(found: int, spec: ClipEncoder) -> None:
    if found != spec.hidden:
        raise PresetError(f"encoder.hidden: {spec.hidden}, but {spec.weights} has hidden size {found}")


def build_clip_text(spec: ClipEncoder, input_shape: list[int], config: dict | None = None) -> nn.Module:
    """CLIP's text tower on stored (3, L) token rows."""
    if spec.weights is None and input_shape[-1] > spec.max_positions:
        raise PresetError(f"encoder.max_positions: {spec.max_positions} < {input_shape[-1]} stored tokens")
    return ClipTextFeatures(spec, config)


def build_clip_vision(spec: ClipEncoder, input_shape: list[int], config: dict | None = None) -> nn.Module:
    """CLIP's vision tower on (3, S, S) images."""
    return ClipVisionFeatures(spec, config)
