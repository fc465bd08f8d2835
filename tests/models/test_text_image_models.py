"""BERT and bottleneck-ResNet branches, image/token inputs, the image head's adapter and the T pairing."""

import pytest
import torch
import torch.nn.functional as F

from igm_cli.engine.flat_projector import FlatProjector, head_pairs, pair_layers
from igm_cli.errors import DataError, PresetError
from igm_cli.models import build_model
from igm_cli.models.inputs import ImageInput, TokensInput
from igm_cli.models.text_image import BertFeatures, ResNetImageFeatures
from igm_cli.preset_schema import BertEncoder, InputSpec, ResNet50Encoder
from igm_cli.presets import resolve_preset
from tests.text_image_helpers import TINY_BERT, TINY_RESNET50, save_tiny_weights, tiny_text_image


def tokens(batch=3, length=10, vocab=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[:, 6:] = 0
    ids[:, 6:] = 0
    return torch.stack([ids, mask, torch.zeros_like(ids)], dim=1)  # (B, 3, L)


def test_bert_feature_is_the_cls_hidden_state_and_ignores_padding():
    torch.manual_seed(0)
    enc = BertFeatures(BertEncoder(weights=None, **TINY_BERT)).eval()
    x = tokens()
    z = enc(x)
    reference = enc.net(input_ids=x[:, 0], attention_mask=x[:, 1], token_type_ids=x[:, 2]).last_hidden_state[
        :, 0
    ]
    assert z.shape == (3, TINY_BERT["hidden"]) and torch.equal(z, reference)
    padded = x.clone()
    padded[:, 0, 6:] = 7  # other ids at masked positions: the [CLS] feature must not change
    assert torch.allclose(enc(padded), z, atol=1e-6)
    unmasked = x.clone()
    unmasked[:, 1, 6:] = 1
    assert not torch.allclose(enc(unmasked), z, atol=1e-4)


def test_resnet50_defaults_are_resnet50_bottlenecks_with_the_imagenet_classifier():
    spec = ResNet50Encoder()
    assert (spec.widths, spec.depths, spec.feature, spec.feature_dim) == (
        [256, 512, 1024, 2048],
        [3, 4, 6, 3],
        "logits",
        1000,
    )
    torch.manual_seed(0)
    tiny = ResNetImageFeatures(ResNet50Encoder(weights=None, **TINY_RESNET50)).eval()
    assert tiny.net.config.layer_type == "bottleneck"
    x = torch.randn(2, 3, 32, 32)
    assert tiny(x).shape == (2, TINY_RESNET50["classes"])
    assert torch.equal(tiny(x), tiny.net(pixel_values=x).logits)
    pooled = ResNetImageFeatures(ResNet50Encoder(weights=None, feature="pooled", **TINY_RESNET50)).eval()
    assert pooled(x).shape == (2, TINY_RESNET50["widths"][-1])


def test_local_save_pretrained_folders_load_offline(tmp_path):
    save_tiny_weights(tmp_path / "bert", tmp_path / "resnet")
    from transformers import BertModel, ResNetForImageClassification

    bert = BertFeatures(BertEncoder(weights=str(tmp_path / "bert"), **TINY_BERT))
    saved = BertModel.from_pretrained(tmp_path / "bert", add_pooling_layer=False)
    assert all(
        torch.equal(a, b)
        for a, b in zip(bert.net.state_dict().values(), saved.state_dict().values(), strict=True)
    )
    image = ResNetImageFeatures(ResNet50Encoder(weights=str(tmp_path / "resnet"), **TINY_RESNET50))
    saved = ResNetForImageClassification.from_pretrained(tmp_path / "resnet")
    assert torch.equal(image.net.classifier[-1].weight, saved.classifier[-1].weight)
    with pytest.raises(PresetError, match="hidden"):
        BertFeatures(BertEncoder(weights=str(tmp_path / "bert"), hidden=32, heads=2))


def test_an_offline_hub_id_is_one_error_naming_the_option():
    preset = resolve_preset("twitter2015", [s for s in tiny_text_image() if "weights" not in s])
    with pytest.raises(DataError, match=r"--set modalities\.text\.encoder\.weights=PATH"):
        build_model(preset, {"text": [3, 12], "image": [3, 32, 32]}, 3)


def test_image_input_resizes_and_normalises_with_clip_statistics():
    spec = resolve_preset("sarcasm").modalities[1].input
    assert spec.kind == "image" and spec.crop_scale == (0.5, 1.0) and spec.size == 224
    pipe = ImageInput(InputSpec(kind="image", size=16, mean=spec.mean, std=spec.std, crop_scale=(0.5, 1.0)))
    x = torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8)
    out = pipe(x, train=False)
    expected = F.interpolate(x.float() / 255, size=(16, 16), mode="bilinear", align_corners=False)
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    assert torch.allclose(out, (expected - mean) / std, atol=1e-5)
    torch.manual_seed(0)
    a, b = pipe(x, train=True), pipe(x, train=True)
    assert a.shape == (2, 3, 16, 16) and not torch.equal(a, b)
    assert TokensInput()(tokens().int(), train=True).dtype == torch.int64


def test_image_head_has_the_adapter_and_T_pairs_only_layers_whose_sizes_match():
    preset = resolve_preset("twitter2015", tiny_text_image())
    model = build_model(preset, {"text": [3, 12], "image": [3, 32, 32]}, 3)
    sizes = {
        m: [(n, lin.in_features, lin.out_features) for n, lin in model.head_linears(m)]
        for m in ("text", "image")
    }
    assert sizes["image"] == [("head.0", 20, 16), ("head.1", 16, 8), ("head.3", 8, 4), ("head.4", 4, 3)]
    assert sizes["text"] == [("head.0", 16, 8), ("head.2", 8, 4), ("head.3", 4, 3)]
    assert head_pairs(model, "image", "text") == {
        "head.0": None,
        "head.1": "text.head.0",
        "head.3": "text.head.2",
        "head.4": "text.head.3",
    }
    assert head_pairs(model, "text", "image") == {
        "head.0": "image.head.1",
        "head.2": "image.head.3",
        "head.3": "image.head.4",
    }
    assert pair_layers([("a", 5), ("b", 4)], [("x", 6), ("y", 4)]) == {"a": None, "b": "y"}
    # the projector applies exactly those pairs
    projector = FlatProjector(tau=0.4)
    projector.collect(model, "text", [model.branch("text").prepare(tokens(4, 12, 16).int(), False)])
    assert projector.begin_stage(model, "image", "text") == ["head.1", "head.3", "head.4"]
