"""Tiny text–image settings shared by the text–image tests and the README test."""

from __future__ import annotations

import json
from pathlib import Path

TINY_BERT = {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32, "vocab_size": 128}
TINY_RESNET50 = {"widths": [8, 16], "depths": [1, 1], "embedding": 4, "classes": 20}


def _compact(value) -> str:
    """JSON without spaces, so a --set value survives a shell's word splitting."""
    return json.dumps(value, separators=(",", ":"))


def tiny_text_image(max_tokens: int = 12, weights: bool = False) -> list[str]:
    """--set overrides: 1-epoch stages, tiny BERT and bottleneck ResNet (random init unless `weights`)."""
    sets = [
        "stages.epochs=[1,1]",
        f"modalities.text.input.tokens={max_tokens}",
        "modalities.image.adapter=[16]",
        "modalities.image.input.size=24",
        "head.widths=[8,4]",
        "data.batch_size=4",
    ]
    sets += [f"modalities.text.encoder.{k}={_compact(v)}" for k, v in TINY_BERT.items()]
    sets += [f"modalities.image.encoder.{k}={_compact(v)}" for k, v in TINY_RESNET50.items()]
    if not weights:
        sets += ["modalities.text.encoder.weights=null", "modalities.image.encoder.weights=null"]
    return sets


def save_tiny_weights(bert_dir: Path, resnet_dir: Path) -> None:
    """save_pretrained folders of the tiny BERT and ResNet, as a user's local copies would be."""
    from transformers import BertConfig, BertModel, ResNetConfig, ResNetForImageClassification

    b = TINY_BERT
    BertModel(
        BertConfig(
            vocab_size=b["vocab_size"],
            hidden_size=b["hidden"],
            num_hidden_layers=b["layers"],
            num_attention_heads=b["heads"],
            intermediate_size=b["intermediate"],
        ),
        add_pooling_layer=False,
    ).save_pretrained(bert_dir)
    r = TINY_RESNET50
    config = ResNetConfig(
        embedding_size=r["embedding"],
        hidden_sizes=r["widths"],
        depths=r["depths"],
        layer_type="bottleneck",
        downsample_in_first_stage=False,
        num_labels=r["classes"],
    )
    ResNetForImageClassification(config).save_pretrained(resnet_dir)
