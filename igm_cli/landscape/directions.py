"""Filter-normalised random directions (Li et al., NeurIPS 2018, §4 "filter normalization").

A direction d has one Gaussian tensor per parameter, drawn from a generator seeded by
crc32(seed, direction index, parameter name, shape), so two checkpoints of one
architecture get the same raw directions, whatever order their parameters come in. Each
output filter (a row of a Linear weight, an output channel of a conv kernel) is then
rescaled to the norm of the same filter in the weights: d_i ← d_i / ‖d_i‖ · ‖θ_i‖.
One-dimensional parameters (biases, BatchNorm scales and shifts) get d = 0, as in the
paper; buffers (BatchNorm running statistics) are not parameters and never move.
"""

from __future__ import annotations

import zlib

import torch

EPS = 1e-10  # Li et al.'s guard against a zero-norm filter of the direction


def direction_seed(seed: int, index: int, name: str, shape: tuple[int, ...]) -> int:
    """Stable 31-bit seed of one direction tensor (crc32, never Python's salted hash())."""
    key = f"{seed}|{index}|{name}|{'x'.join(map(str, shape))}"
    return zlib.crc32(key.encode())


def raw_direction(seed: int, index: int, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The unnormalised Gaussian tensor of one parameter (CPU float32, device-independent)."""
    generator = torch.Generator().manual_seed(direction_seed(seed, index, name, tuple(shape)))
    return torch.randn(tuple(shape), generator=generator)


def filter_normalize(direction: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Rescale every output filter d[i] to ‖weight[i]‖; zero for 1-D parameters."""
    if weight.dim() <= 1:
        return torch.zeros_like(weight)
    d = direction.to(device=weight.device, dtype=weight.dtype)
    d_norm = d.flatten(1).norm(dim=1)  # (out,)
    w_norm = weight.detach().flatten(1).norm(dim=1)  # (out,)
    scale = (w_norm / (d_norm + EPS)).view(-1, *([1] * (weight.dim() - 1)))
    return d * scale


def is_moved(param: torch.Tensor) -> bool:
    """Whether a parameter gets a non-zero direction (weights of dimension ≥ 2)."""
    return param.dim() >= 2


def make_directions(
    named_params: list[tuple[str, torch.Tensor]], seed: int, dims: int
) -> list[list[torch.Tensor]]:
    """`dims` filter-normalised directions, each a list aligned with `named_params`."""
    return [
        [filter_normalize(raw_direction(seed, k, name, tuple(p.shape)), p) for name, p in named_params]
        for k in range(dims)
    ]


def cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Cosine between two directions over all their tensors (≈ 0 for independent ones)."""
    dot = sum(float((x * y).sum()) for x, y in zip(a, b, strict=True))
    na = sum(float((x * x).sum()) for x in a) ** 0.5
    nb = sum(float((y * y).sum()) for y in b) ** 0.5
    return dot / (na * nb) if na and nb else 0.0
