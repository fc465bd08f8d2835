"""I3D (Inception-v1 inflated to 3-D, Carreira & Zisserman 2017) as φ for clips: (B, T, C, H, W) → (B, 1024).

Module and parameter names follow the layout of the public pytorch-i3d state dicts
(`rgb_imagenet.pt`, `flow_imagenet.pt`): `Conv3d_1a_7x7.conv3d.weight`, `….bn.*`,
`Mixed_3b.b1b.conv3d.weight`, … so those files load directly (their `logits.*` are not
used: the feature is the average-pooled Mixed_5c output, as in the IGM release). Padding
is TensorFlow's "same", BatchNorm eps 1e-3 / momentum 0.01, as the weights were trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError

TEMPORAL_STRIDE = 8  # Conv3d_1a, MaxPool3d_4a and MaxPool3d_5a each halve time

# name → (output channels of the six Inception convolutions b0, b1a, b1b, b2a, b2b, b3b)
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# the network in forward order: ("conv", out, kernel, stride) | ("pool", kernel, stride) | ("mixed",)
LAYOUT: list[tuple[str, tuple]] = [
    ("Conv3d_1a_7x7", ("conv", 64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", ("pool", (1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", ("conv", 64, (1, 1, 1), (1, 1, 1))),
    ("Conv3d_2c_3x3", ("conv", 192, (3, 3, 3), (1, 1, 1))),
    ("MaxPool3d_3a_3x3", ("pool", (1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", ("mixed",)),
    ("Mixed_3c", ("mixed",)),
    ("MaxPool3d_4a_3x3", ("pool", (3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", ("mixed",)),
    ("Mixed_4c", ("mixed",)),
    ("Mixed_4d", ("mixed",)),
    ("Mixed_4e", ("mixed",)),
    ("Mixed_4f", ("mixed",)),
    ("MaxPool3d_5a_2x2", ("pool", (2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", ("mixed",)),
    ("Mixed_5c", ("mixed",)),
]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (front, back) of one axis: output size ceil(size / stride)."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    t, h, w = x.shape[2:]
    pads = [same_padding(n, k, s) for n, k, s in zip((t, h, w), kernel, stride, strict=True)]
    return F.pad(x, (*pads[2], *pads[1], *pads[0]))  # F.pad wants the last axis first


class Unit3D(nn.Module):
    """Conv3d (no bias) → BatchNorm3d → ReLU, with "same" padding."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int], stride=(1, 1, 1)):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, T, H, W) → (B, cout, ⌈T/s⌉, ⌈H/s⌉, ⌈W/s⌉)."""
        return F.relu(self.bn(self.conv3d(_pad(x, self.kernel, self.stride))))


class MaxPool3dSame(nn.Module):
    """Max pooling with "same" padding (zeros: inputs are post-ReLU); no parameters."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled map, ⌈size / stride⌉ on every axis."""
        return F.max_pool3d(_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four parallel paths (1×1; 1×1→3×3; 1×1→3×3; pool→1×1), concatenated on channels."""

    def __init__(self, cin: int, widths: tuple[int, ...]):
        super().__init__()
        one, three = (1, 1, 1), (3, 3, 3)
        self.b0 = Unit3D(cin, widths[0], one)
        self.b1a, self.b1b = Unit3D(cin, widths[1], one), Unit3D(widths[1], widths[2], three)
        self.b2a, self.b2b = Unit3D(cin, widths[3], one), Unit3D(widths[3], widths[4], three)
        self.b3a, self.b3b = MaxPool3dSame(three, (1, 1, 1)), Unit3D(cin, widths[5], one)
        self.out_channels = widths[0] + widths[2] + widths[4] + widths[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, T, H, W) → (B, out_channels, T, H, W)."""
        paths = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(paths, dim=1)


class I3D(nn.Module):
    """The I3D trunk up to Mixed_5c, then a mean over time and space: clips → (B, 1024 / divisor).

    `width_divisor` shrinks every layer's channels (tiny test models; 1 = the real network
    the public weights fit). `pool_frames` is how many temporal positions Mixed_5c must
    have (the release pools with an (8, 7, 7) kernel, so 8): inputs need
    `min_frames = 8 · (pool_frames − 1) + 1` frames.
    """

    def __init__(self, in_channels: int, width_divisor: int = 1, pool_frames: int = 8):
        super().__init__()
        self.in_channels, self.pool_frames = in_channels, pool_frames
        cin = in_channels
        for name, (kind, *args) in LAYOUT:
            if kind == "conv":
                cout, kernel, stride = args
                layer = Unit3D(cin, max(1, cout // width_divisor), kernel, stride)
                cin = layer.conv3d.out_channels
            elif kind == "pool":
                layer = MaxPool3dSame(*args)
            else:
                layer = InceptionModule(cin, tuple(max(1, w // width_divisor) for w in MIXED[name]))
                cin = layer.out_channels
            self.add_module(name, layer)  # the module name is the state-dict prefix
        self.out_dim = cin

    @property
    def min_frames(self) -> int:
        """Fewest input frames for which Mixed_5c has `pool_frames` temporal positions."""
        return TEMPORAL_STRIDE * (self.pool_frames - 1) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) clip (our stored layout) → (B, out_dim)."""
        if x.shape[1] < self.min_frames:
            raise InputTooShort(f"I3D needs at least {self.min_frames} frames per clip, got {x.shape[1]}")
        x = x.transpose(1, 2)  # (B, C, T, H, W)
        for name, _ in LAYOUT:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3, 4))  # (B, out_dim)


class InputTooShort(DataError):
    """A clip with fewer frames than the network needs (data that does not fit: exit 3)."""
