"""Input pipelines (batched augmentation) and the ResNet branches built with transformers."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from igm_cli.cli import app
from igm_cli.data.manifest import write_prepared
from igm_cli.models.encoders import build_resnet
from igm_cli.models.inputs import FramesInput, SpectrogramInput, random_crop_affine
from igm_cli.preset_schema import InputSpec, ResNetEncoder
from tests.helpers import set_args

TINY_RESNET = {"widths": [4, 8], "depths": [1, 1], "embedding": 4}
TINY_AV = [
    "stages.epochs=[1,1]",
    *(
        f"modalities.{m}.encoder.{k}={json.dumps(v)}"
        for m in ("audio", "video")
        for k, v in TINY_RESNET.items()
    ),
    "modalities.video.input.size=32",
    "head.widths=[8,4]",
    "data.batch_size=4",
]


def test_crop_boxes_lie_inside_the_image_with_the_requested_area():
    torch.manual_seed(0)
    theta = random_crop_affine(2000, (0.2, 0.6), flip=True, device=torch.device("cpu"))
    w, h = theta[:, 0, 0].abs(), theta[:, 1, 1]
    assert torch.all(theta[:, 0, 2].abs() + w <= 1 + 1e-6) and torch.all(theta[:, 1, 2].abs() + h <= 1 + 1e-6)
    area = w * h
    assert area.min() >= 0.2 - 1e-6 and area.max() <= 0.6 + 1e-6
    assert 0.4 < (theta[:, 0, 0] < 0).float().mean() < 0.6  # about half flipped


def test_frames_eval_is_a_deterministic_resize_and_normalisation():
    spec = InputSpec(kind="frames", size=16)
    pipeline = FramesInput(spec)
    x = torch.randint(0, 256, (2, 3, 3, 24, 20), dtype=torch.uint8)
    out = pipeline(x, train=False)
    assert out.shape == (2, 3, 3, 16, 16)
    expected = F.interpolate(
        x.flatten(0, 1).float() / 255, size=(16, 16), mode="bilinear", align_corners=False
    )
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    torch.testing.assert_close(out.flatten(0, 1), (expected - mean) / std)


def test_frames_train_applies_the_sampled_box_and_flip(monkeypatch):
    import igm_cli.models.inputs as inputs

    theta = torch.tensor([[[-1.0, 0, 0], [0, 1, 0]], [[0.5, 0, -0.5], [0, 0.5, 0.5]]])  # flip; quarter crop
    monkeypatch.setattr(inputs, "random_crop_affine", lambda b, scale, flip, device: theta[:b])
    pipeline = FramesInput(InputSpec(kind="frames", size=8))
    x = torch.randint(0, 256, (2, 2, 3, 8, 8), dtype=torch.uint8)
    x[1, :, :, 4:, :4] = 200  # the bottom-left quadrant (y down, x right) is constant
    out, plain = pipeline(x, train=True), pipeline(x, train=False)
    torch.testing.assert_close(out[0], plain[0].flip(-1))  # the same box for every frame of a sample
    mean, std = (
        torch.tensor(InputSpec().mean).view(1, 3, 1, 1),
        torch.tensor(InputSpec().std).view(1, 3, 1, 1),
    )
    expected = ((200 / 255 - mean) / std).expand(2, 3, 7, 7)
    # away from the box's inner edges (row 0, column 7 blend with the neighbours) it is that constant
    torch.testing.assert_close(out[1][..., 1:, :7], expected, atol=1e-5, rtol=1e-5)


def test_spectrogram_becomes_one_channel_image():
    x = torch.randn(2, 257, 188)
    assert SpectrogramInput()(x, train=True).shape == (2, 1, 257, 188)


def test_resnet18_has_the_paper_size_and_averages_frames():
    full = build_resnet(ResNetEncoder(), [257, 188])
    assert sum(p.numel() for p in full.parameters()) == 11_170_240  # ResNet-18 without its fc
    tiny = build_resnet(ResNetEncoder(**TINY_RESNET), [2, 3, 16, 16]).eval()
    frames = torch.randn(3, 2, 3, 16, 16)
    z = tiny(frames)
    assert z.shape == (3, 8)
    per_frame = torch.stack([tiny(frames[:, t]) for t in range(2)]).mean(0)
    torch.testing.assert_close(z, per_frame, atol=1e-5, rtol=1e-5)


@pytest.fixture
def av_prepared(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 12), ("test", 12)):
        labels = np.arange(n) % 6
        audio = rng.normal(size=(n, 32, 20)).astype(np.float32) + labels[:, None, None]
        video = rng.integers(0, 255, size=(n, 1, 3, 36, 36), dtype=np.uint8)
        arrays[split] = {"labels": labels, "audio": audio, "video": video}
    classes = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
    write_prepared(tmp_path / "av", dataset="crema-d", classes=classes, arrays=arrays, preprocessing={})
    return tmp_path / "av"


def test_crema_d_preset_trains_tiny_resnets_and_evaluates(av_prepared):
    runner = CliRunner()
    result = runner.invoke(
        app, ["train", "--preset", "crema-d", "--data", str(av_prepared), "--json", *set_args(TINY_AV)]
    )
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)
    assert set(results["test"]) == {"audio", "video", "fused"}
    stage1 = results["stages"][1]
    assert stage1["sam_realized"]["relative_size"] < 1e-8  # the paper's ρ = 1e-10: ε vanishes in float32
    evaluated = runner.invoke(app, ["eval", results["checkpoint"], "--json"])
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["metrics"] == results["test"]


def test_preset_modalities_must_exist_in_the_data(av_prepared):
    result = CliRunner().invoke(app, ["train", "--data", str(av_prepared), "--set", "stages.epochs=[1,1]"])
    assert result.exit_code == 2
    assert "dataset: preset says 'mfeat' but the data is 'crema-d'" in result.stderr


def test_preset_classes_and_input_kinds_must_match_the_data(av_prepared):
    runner = CliRunner()
    wrong_classes = runner.invoke(
        app, ["train", "-p", "crema-d", "--data", str(av_prepared), "--set", "num_classes=7"]
    )
    assert wrong_classes.exit_code == 2
    assert "num_classes: preset says 7, the data has 6" in wrong_classes.stderr
    wrong_kind = runner.invoke(
        app,
        ["train", "-p", "crema-d", "--data", str(av_prepared), "--set", "modalities.audio.input.kind=frames"],
    )
    assert wrong_kind.exit_code == 2
    assert "modalities.audio.input.kind" in wrong_kind.stderr
