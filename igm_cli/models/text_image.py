"""Text–image encoders via transformers: BERT ([CLS] feature) and a bottleneck ResNet (ResNet-50).

Pretrained weights come from a local save_pretrained folder or a hub id (`weights`);
`weights: null` builds the architecture from the preset's sizes with random
initialisation (tests, from-scratch runs). Nothing is downloaded when HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from igm_cli.errors import PresetError
from igm_cli.preset_schema import BertEncoder, ResNet50Encoder


class WeightsUnavailable(Exception):
    """Pretrained weights that cannot be loaded (offline hub id, wrong folder)."""

    def __init__(self, weights: str, detail: str):
        super().__init__(f"{weights}: {detail}")
        self.weights, self.detail = weights, detail


def from_pretrained(cls: Any, weights: str, **kwargs: Any) -> Any:
    """cls.from_pretrained, turning transformers' load failures into WeightsUnavailable."""
    from transformers.utils import logging

    logging.disable_progress_bar()  # stderr carries igm's own progress and one-line errors
    try:
        if torch.get_default_device().type == "meta":  # sizing a checkpoint's model: config only
            return cls(cls.config_class.from_pretrained(weights), **kwargs)
        return cls.from_pretrained(weights, **kwargs)
    except (OSError, ValueError) as e:
        raise WeightsUnavailable(weights, str(e).strip().splitlines()[0][:160]) from None


class HfConfigured:
    """Mixin: the transformers config of `self.net`, stored in checkpoints to rebuild without the weights."""

    def hf_config(self) -> dict[str, Any]:
        """The network's config as plain JSON data."""
        return json.loads(self.net.config.to_json_string())


class BertFeatures(HfConfigured, nn.Module):
    """Token rows (B, 3, L) = ids, attention mask, token types → [CLS] hidden state (B, hidden)."""

    def __init__(self, spec: BertEncoder, config: dict[str, Any] | None = None):
        super().__init__()
        from transformers import BertConfig, BertModel  # heavy: imported only when used

        if config is not None:  # rebuilding a checkpoint: its weights replace these
            self.net = BertModel(BertConfig.from_dict(config), add_pooling_layer=False)
        elif spec.weights:
            self.net = from_pretrained(BertModel, spec.weights, add_pooling_layer=False)
            if self.net.config.hidden_size != spec.hidden:
                raise PresetError(
                    f"encoder.hidden: {spec.hidden}, but {spec.weights} has hidden size "
                    f"{self.net.config.hidden_size}"
                )
        else:
            config = BertConfig(
                vocab_size=spec.vocab_size,
                hidden_size=spec.hidden,
                num_hidden_layers=spec.layers,
                num_attention_heads=spec.heads,
                intermediate_size=spec.intermediate,
                max_position_embeddings=spec.max_positions,
            )
            self.net = BertModel(config, add_pooling_layer=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, L) int → (B, hidden)."""
        x = x.long()
        out = self.net(input_ids=x[:, 0], attention_mask=x[:, 1], token_type_ids=x[:, 2])
        return out.last_hidden_state[:, 0]


class ResNetImageFeatures(HfConfigured, nn.Module):
    """Images (B, 3, H, W) → classifier logits (B, classes) or the pooled map (B, widths[-1])."""

    def __init__(self, spec: ResNet50Encoder, config: dict[str, Any] | None = None):
        super().__init__()
        from transformers import ResNetConfig, ResNetForImageClassification

        if config is not None:
            net = ResNetForImageClassification(ResNetConfig.from_dict(config))
        elif spec.weights:
            net = from_pretrained(ResNetForImageClassification, spec.weights)
        else:
            config = ResNetConfig(
                num_channels=3,
                embedding_size=spec.embedding,
                hidden_sizes=list(spec.widths),
                depths=list(spec.depths),
                layer_type="bottleneck",
                hidden_act="relu",
                downsample_in_first_stage=False,
                num_labels=spec.classes,
            )
            net = ResNetForImageClassification(config)
        self.logits = spec.feature == "logits"
        found = net.config.num_labels if self.logits else net.config.hidden_sizes[-1]
        if found != spec.feature_dim:
            key = "classes" if self.logits else "widths"
            raise PresetError(f"encoder.{key}: feature size {spec.feature_dim}; {spec.weights} gives {found}")
        self.net = net if self.logits else net.resnet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, d)."""
        if self.logits:
            return self.net(pixel_values=x).logits
        return self.net(pixel_values=x).pooler_output.flatten(1)


def build_bert(spec: BertEncoder, input_shape: list[int], config: dict | None = None) -> nn.Module:
    """BERT on stored (3, L) token rows (`config`: rebuild that architecture, no weights read)."""
    if spec.weights is None and input_shape[-1] > spec.max_positions:
        raise PresetError(f"encoder.max_positions: {spec.max_positions} < {input_shape[-1]} stored tokens")
    return BertFeatures(spec, config)


def build_resnet50(spec: ResNet50Encoder, input_shape: list[int], config: dict | None = None) -> nn.Module:
    """A bottleneck ResNet on (3, S, S) images."""
    return ResNetImageFeatures(spec, config)
