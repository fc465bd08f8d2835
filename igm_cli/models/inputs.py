"""Input pipelines: stored samples → encoder input, as batched torch ops on the training device.

Augmentation runs once per batch *before* the step (not inside the forward pass), so that
SAM's second pass sees exactly the batch of the first. Randomness comes from torch's
global generator of the batch's device, which checkpoints save and restore.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..preset_schema import InputSpec


class VectorInput(nn.Module):
    """Features used as stored (cast to float)."""

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """(B, ...) → float (B, ...)."""
        return x.float()


class SpectrogramInput(nn.Module):
    """A (B, F, T) spectrogram becomes a one-channel image (B, 1, F, T)."""

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """(B, F, T) → (B, 1, F, T)."""
        return x.float().unsqueeze(1)


class FramesInput(nn.Module):
    """uint8 frames (B, T, 3, H, W) → normalised float (B, T, 3, S, S).

    Training: one random resized crop (area in `crop_scale`, aspect in [3/4, 4/3]) and
    flip per sample, shared by its frames; evaluation: a plain resize to S×S.
    """

    def __init__(self, spec: InputSpec):
        super().__init__()
        self.size, self.scale, self.flip = spec.size, spec.crop_scale, spec.flip
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """Crop/resize then normalise."""
        B, T = x.shape[:2]
        frames = x.flatten(0, 1).float().div_(255)  # (B*T, 3, H, W)
        if train:
            theta = random_crop_affine(B, self.scale, self.flip, x.device).repeat_interleave(T, dim=0)
            grid = F.affine_grid(theta, [B * T, 3, self.size, self.size], align_corners=False)
            frames = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
        else:
            frames = F.interpolate(frames, size=(self.size, self.size), mode="bilinear", align_corners=False)
        frames = frames.unflatten(0, (B, T))
        return (frames - self.mean) / self.std


def random_crop_affine(
    batch: int, scale: tuple[float, float], flip: bool, device: torch.device
) -> torch.Tensor:
    """Affine matrices (B, 2, 3) mapping the output grid onto random crop boxes.

    A box of relative width w and height h centred at (cx, cy) (normalised coordinates in
    [−1, 1]) is x_in = w·x_out + cx, y_in = h·y_out + cy; a flip negates w.
    """
    u = torch.rand(batch, 5, device=device)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_ratio = torch.log(torch.tensor(3 / 4, device=device)) * (1 - 2 * u[:, 1])  # aspect in [3/4, 4/3]
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - w) * (2 * u[:, 2] - 1)
    cy = (1 - h) * (2 * u[:, 3] - 1)
    sign = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if flip else torch.ones(batch, device=device)
    theta = torch.zeros(batch, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return theta


class ImageInput(nn.Module):
    """uint8 images (B, 3, H, W) → normalised (B, 3, S, S): a one-frame FramesInput.

    Training: random resized crop (area in `crop_scale`) + flip; evaluation: resize.
    """

    def __init__(self, spec: InputSpec):
        super().__init__()
        self.frames = FramesInput(spec)

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """(B, 3, H, W) → (B, 3, S, S)."""
        return self.frames(x.unsqueeze(1), train).squeeze(1)


class TokensInput(nn.Module):
    """Stored token rows (B, 3, L) (ids, mask, types) go to the encoder as int64."""

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """(B, 3, L) → (B, 3, L) long."""
        return x.long()


def build_input(spec: InputSpec) -> nn.Module:
    """The pipeline a modality's `input.kind` names."""
    if spec.kind == "frames":
        return FramesInput(spec)
    if spec.kind == "image":
        return ImageInput(spec)
    if spec.kind == "tokens":
        return TokensInput()
    if spec.kind == "spectrogram":
        return SpectrogramInput()
    if spec.kind == "clip":
        from .clip_input import ClipInput

        return ClipInput(spec)
    return VectorInput()
