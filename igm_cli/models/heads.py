"""The per-modality classification head of the paper (§4.2): FC(d,256) → ReLU → FC(256,64) → FC(64,C)."""

from __future__ import annotations

from torch import nn


def build_head(
    dim: int, widths: list[int], num_classes: int, adapter: list[int] | None = None
) -> nn.Sequential:
    """Head with ReLU after the first Linear only, as the paper writes it.

    For widths [256, 64]: Linear(d,256), ReLU, Linear(256,64), Linear(64,C). An `adapter`
    such as [768] puts Linear(d,768) (no activation) first: the reference's image head
    Linear(1000,768) → Linear(768,256) → ReLU → ….
    """
    sizes_in = [dim, *(adapter or [])]
    layers: list[nn.Module] = [nn.Linear(a, b) for a, b in zip(sizes_in[:-1], sizes_in[1:], strict=True)]
    layers += [nn.Linear(sizes_in[-1], widths[0]), nn.ReLU()]
    sizes = [*widths, num_classes]
    layers += [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return nn.Sequential(*layers)
