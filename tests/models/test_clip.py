"""CLIP text and vision towers (optional encoders of the text–image presets, the paper's Figure 5b)."""

import torch

from igm_cli.models import build_model
from igm_cli.models.clip import ClipTextFeatures, ClipVisionFeatures
from igm_cli.preset_schema import ClipEncoder
from igm_cli.presets import resolve_preset
from tests.text_image_helpers import tiny_text_image

TINY = {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32}


def test_clip_text_feature_is_the_last_real_tokens_final_state():
    torch.manual_seed(0)
    enc = ClipTextFeatures(ClipEncoder(weights=None, vocab_size=64, max_positions=16, **TINY)).eval()
    ids = torch.randint(1, 60, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, 6:] = 0  # sample 0 has 6 real tokens
    x = torch.stack([ids, mask, torch.zeros_like(ids)], dim=1)
    hidden = enc.net(input_ids=ids, attention_mask=mask).last_hidden_state
    z = enc(x)
    assert torch.equal(z[0], hidden[0, 5]) and torch.equal(z[1], hidden[1, 9])


def test_clip_vision_pools_any_image_size_and_loads_a_full_clip_folder(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    common = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision = common | {"image_size": 32, "patch_size": 8}
    text = common | {"vocab_size": 64}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision)).save_pretrained(tmp_path / "clip")
    enc = ClipVisionFeatures(
        ClipEncoder(name="clip-vision", weights=str(tmp_path / "clip"), hidden=16)
    ).eval()
    saved = CLIPModel.from_pretrained(tmp_path / "clip").vision_model
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(enc(x), saved(pixel_values=x).pooler_output, atol=1e-6)
    assert enc(torch.randn(2, 3, 24, 24)).shape == (2, 16)  # position embeddings interpolated


def test_the_text_image_presets_take_clip_encoders():
    sets = [s for s in tiny_text_image(12) if ".encoder." not in s] + [
        "modalities.text.encoder={name: clip-text, weights: null, hidden: 16, layers: 1, heads: 2, "
        "intermediate: 32, vocab_size: 128, max_positions: 16}",
        "modalities.image.encoder={name: clip-vision, weights: null, hidden: 16, layers: 1, heads: 2, "
        "intermediate: 32, patch: 8, image_size: 24}",
        "modalities.image.adapter=[]",
    ]
    preset = resolve_preset("twitter2015", sets)
    model = build_model(preset, {"text": [3, 12], "image": [3, 32, 32]}, 3)
    x = {
        "text": torch.randint(0, 2, (2, 3, 12)),
        "image": torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8),
    }
    logits = model(model.prepare(x, train=True))
    assert {m: z.shape for m, z in logits.items()} == {"text": (2, 3), "image": (2, 3)}
