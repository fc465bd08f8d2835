"""Clip inputs: one random window and crop per sample, the same in every modality on the grid."""

import torch

from igm_cli.models import build_model
from igm_cli.presets import resolve_preset

T, H, W = 10, 20, 24


def positions(batch: int, channels: int) -> torch.Tensor:
    """uint8 clips whose pixels encode where they come from: channel 0 = t·10 + y, channel 1 = x."""
    t = torch.arange(T).view(T, 1, 1)
    y = torch.arange(H).view(1, H, 1)
    x = torch.arange(W).view(1, 1, W)
    planes = [(t * 10 + y).expand(T, H, W), x.expand(T, H, W)] + [torch.zeros(T, H, W, dtype=torch.long)]
    clip = torch.stack(planes[:channels] if channels > 1 else [planes[0]], dim=1)  # (T, C, H, W)
    return clip.to(torch.uint8).unsqueeze(0).repeat(batch, 1, 1, 1, 1)


def nvgesture_model(window=4, size=12, shared=(True, True, True)):
    sets = []
    for m, share in zip(("depth", "rgb", "flow"), shared, strict=True):
        values = {"encoder.weights": "", "encoder.width_divisor": 16, "encoder.pool_frames": 1,
                  "input.size": size, "input.window": window, "input.shared_view": share}  # fmt: skip
        sets += [f"modalities.{m}.{key}={value}" for key, value in values.items()]
    preset = resolve_preset("nvgesture", sets)
    shapes = {"depth": [T, 1, H, W], "rgb": [T, 3, H, W], "flow": [T, 2, H, W]}
    return build_model(preset, shapes, 25)


def cut_origin(out: torch.Tensor, std: float, mean: float) -> torch.Tensor:
    """(start, top) per sample, read back from channel 0 of the normalised output."""
    code = (out[:, 0, 0, 0, 0] * std + mean) * 255  # (B,) = t·10 + y of the window's first pixel
    code = code.round().long()
    return torch.stack([code // 10, code % 10], dim=1)


def stored_batch(batch=16):
    return {"depth": positions(batch, 1), "rgb": positions(batch, 3), "flow": positions(batch, 2)}


def test_train_crop_and_window_are_shared_by_the_three_modalities_of_a_sample():
    model = nvgesture_model()
    torch.manual_seed(0)
    out = model.prepare(stored_batch(), train=True)
    assert out["rgb"].shape == (16, 4, 3, 12, 12) and out["flow"].shape == (16, 4, 2, 12, 12)
    # undo each modality's normalisation: depth (0, 1), rgb ImageNet, flow (0.5, 0.5)
    depth = cut_origin(out["depth"], 1.0, 0.0)
    rgb = cut_origin(out["rgb"], 0.229, 0.485)
    flow = cut_origin(out["flow"], 0.5, 0.5)
    assert torch.equal(depth, rgb) and torch.equal(rgb, flow)
    pairs = ((out["rgb"], 0.224, 0.456), (out["flow"], 0.5, 0.5))  # channel 1 encodes x
    left = [((o[:, 0, 1, 0, 0] * s + mu) * 255).round().long() for o, s, mu in pairs]
    assert torch.equal(left[0], left[1])
    assert depth[:, 0].max() <= T - 4 and depth[:, 1].max() <= H - 12 and left[0].max() <= W - 12
    assert len(set(map(tuple, torch.cat([depth, left[0][:, None]], 1).tolist()))) > 8  # varies by sample
    # within a clip: consecutive frames, contiguous rows and columns
    t0, y0 = depth[:, 0], depth[:, 1]
    codes = ((out["depth"][:, :, 0, :, 0]) * 255).round().long()  # (B, F, S) = t·10 + y
    expected = (t0.view(-1, 1, 1) + torch.arange(4).view(1, 4, 1)) * 10 + y0.view(-1, 1, 1) + torch.arange(12)
    assert torch.equal(codes, expected)


def test_eval_keeps_every_frame_and_the_centre_crop():
    model = nvgesture_model()
    out = model.prepare(stored_batch(2), train=False)
    assert out["depth"].shape == (2, T, 1, 12, 12)
    assert cut_origin(out["depth"], 1.0, 0.0).tolist() == [[0, (H - 12) // 2]] * 2
    left = ((out["flow"][:, 0, 1, 0, 0] * 0.5 + 0.5) * 255).round().long()
    assert left.tolist() == [(W - 12) // 2] * 2


def test_a_modality_that_does_not_share_draws_its_own_view():
    model = nvgesture_model(shared=(True, True, False))
    torch.manual_seed(1)
    out = model.prepare(stored_batch(), train=True)
    depth, rgb = cut_origin(out["depth"], 1.0, 0.0), cut_origin(out["rgb"], 0.229, 0.485)
    assert torch.equal(depth, rgb) and not torch.equal(depth, cut_origin(out["flow"], 0.5, 0.5))
