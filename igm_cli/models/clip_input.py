"""Clip inputs (B, T, C, H, W) uint8: one random window and crop per sample, shared across modalities.

Training takes a random `window`-frame span and a random `size`² crop; evaluation keeps
every frame and the centre crop (NVGesture, datasets.md). Modalities that store clips on
the same grid (frames, height, width) and set `shared_view` get the *same* span and
offsets per sample, drawn once by `LateFusionModel.prepare`: RGB, depth and the flow
computed from the RGB stay aligned, whatever the set of modalities is. Everything is
batched indexing on the batch's device, drawn from that device's global generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..preset_schema import InputSpec


@dataclass(frozen=True)
class ClipView:
    """Where each sample of a batch is cut: frame start and crop top/left, (B,) each."""

    start: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor


class ClipInput(nn.Module):
    """uint8 clips (B, T, C, H, W) → float (B, window, C, size, size), scaled and normalised."""

    def __init__(self, spec: InputSpec):
        super().__init__()
        self.size, self.window, self.shared_view = spec.size, spec.window, spec.shared_view
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 1, -1, 1, 1), persistent=False)

    def grid(self, x: torch.Tensor) -> tuple[int, ...]:
        """What a view depends on: (frames, height, width) stored, window and crop."""
        T, _, H, W = x.shape[1:]
        return T, H, W, self.frames(T), self.size

    def frames(self, stored: int) -> int:
        """Frames of a training window."""
        return min(self.window or stored, stored)

    def draw(self, x: torch.Tensor) -> ClipView:
        """A random window and crop for every sample of the batch `x`."""
        B, T, _, H, W = x.shape
        high = torch.tensor([T - self.frames(T), H - self.size, W - self.size], device=x.device) + 1
        u = (torch.rand(B, 3, device=x.device) * high).long().minimum(high - 1)  # (B, 3) uniform integers
        return ClipView(u[:, 0], u[:, 1], u[:, 2])

    def centre(self, x: torch.Tensor) -> ClipView:
        """All frames and the centre crop (evaluation)."""
        B, _, _, H, W = x.shape
        full = torch.zeros(B, dtype=torch.long, device=x.device)
        return ClipView(full, full + (H - self.size) // 2, full + (W - self.size) // 2)

    def cut(self, x: torch.Tensor, view: ClipView, frames: int) -> torch.Tensor:
        """(B, T, C, H, W) → (B, frames, C, size, size) at each sample's own offsets (one gather)."""
        B = x.shape[0]
        steps, side = torch.arange(frames, device=x.device), torch.arange(self.size, device=x.device)
        b = torch.arange(B, device=x.device).view(B, 1, 1, 1)
        t = (view.start[:, None] + steps).view(B, frames, 1, 1)
        y = (view.top[:, None] + side).view(B, 1, self.size, 1)
        w = (view.left[:, None] + side).view(B, 1, 1, self.size)
        return x.permute(0, 1, 3, 4, 2)[b, t, y, w].permute(0, 1, 4, 2, 3)  # (B, F, C, S, S)

    def forward(self, x: torch.Tensor, train: bool, view: ClipView | None = None) -> torch.Tensor:
        """Cut (a given view, a fresh random one, or the centre) then scale to [0, 1] and normalise."""
        T = x.shape[1]
        if train:
            clip = self.cut(x, view if view is not None else self.draw(x), self.frames(T))
        else:
            clip = self.cut(x, self.centre(x), T)
        return (clip.float().div_(255) - self.mean) / self.std


def prepare_shared(pipelines: dict[str, nn.Module], inputs: dict[str, torch.Tensor], train: bool):
    """Every modality's encoder input; clip modalities on one grid share one drawn view per sample."""
    views: dict[tuple[int, ...], ClipView] = {}
    out = {}
    for m, x in inputs.items():
        pipe = pipelines[m]
        if train and isinstance(pipe, ClipInput) and pipe.shared_view:
            key = pipe.grid(x)
            if key not in views:
                views[key] = pipe.draw(x)
            out[m] = pipe(x, train, views[key])
        else:
            out[m] = pipe(x, train)
    return out


def clip_problems(name: str, spec: InputSpec, shape: list[int], min_frames: int | None) -> list[str]:
    """Why a stored clip shape (T, C, H, W) does not fit a modality's input and encoder."""
    T, C, H, W = shape
    where = f"modalities.{name}"
    problems = []
    if len(spec.mean) != C or len(spec.std) != C:
        problems.append(f"{where}.input.mean/std: need {C} values (one per stored channel of {name})")
    if spec.size > min(H, W):
        problems.append(f"{where}.input.size: crop {spec.size} is larger than the stored {H}×{W}")
    if spec.window is not None and spec.window > T:
        problems.append(f"{where}.input.window: {spec.window} frames, the data has {T}")
    seen = min(spec.window or T, T)
    if min_frames is not None and seen < min_frames:
        problems.append(
            f"{where}: the encoder needs at least {min_frames} frames per clip, it would get {seen}"
        )
    return problems
