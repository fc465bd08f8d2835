"""Corrupting one modality's input: Gaussian noise in units of its training-set std, or token swaps.

Noise is added to the encoder input (the stored sample after the evaluation input pipeline:
scaled and normalised pixels, the one-channel spectrogram, the float vector), at σ × the
std of that input over the training split: per feature for `vector` inputs (their features
have unrelated units, e.g. Fourier magnitudes beside Karhunen–Loève coefficients), one std
over all values for images, frames, clips and spectrograms. Token inputs get random token
replacement instead: each content token with probability σ becomes a token drawn uniformly
from the vocabulary minus the special ids; padding, the first token ([CLS]) and the last
token of each segment ([SEP]) are kept. The same random draws serve every σ (common random
numbers), so the curves move with σ only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from igm_cli.data.prepared import SplitArrays

SCALE_ROWS = 2048
"""Training samples the std is estimated on (a seeded subset when the split is larger)."""


@dataclass
class Corruption:
    """How one modality is corrupted: Gaussian noise of scale `std`, or tokens from `allowed`."""

    modality: str
    kind: str  # "gaussian" | "tokens"
    std: torch.Tensor | None = None  # () or the item shape (per feature)
    allowed: torch.Tensor | None = None  # token ids a replacement is drawn from

    def describe(self) -> dict:
        """What the JSON records about the corruption."""
        if self.kind == "tokens":
            return {
                "kind": "token replacement with probability σ",
                "replacements": "uniform over the vocabulary without the special ids",
                "kept": "padding, the first token and the last token of each segment",
                "vocabulary": int(self.allowed.numel()),
            }
        per = "per feature" if self.std.dim() else "one over all values"
        return {
            "kind": "gaussian noise of σ × training-set std on the encoder input",
            "std": per,
            "std_mean": float(self.std.float().mean()),
        }


def stored_rows(
    array, device: torch.device, batch: int, rows: np.ndarray | None = None
) -> Iterator[torch.Tensor]:
    """Chunks of a stored array on `device`: a preloaded tensor sliced, or a memory map read per chunk."""
    if rows is None and isinstance(array, torch.Tensor):
        yield from (array[start : start + batch] for start in range(0, len(array), batch))
        return
    index = np.arange(len(array)) if rows is None else rows
    for start in range(0, len(index), batch):
        chunk = index[start : start + batch]
        yield torch.from_numpy(np.asarray(array[chunk])).to(device)


def scale_rows(n: int, seed: int) -> np.ndarray:
    """All rows, or a sorted seeded subset of SCALE_ROWS of them."""
    if n <= SCALE_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, SCALE_ROWS, replace=False))


@torch.no_grad()
def input_std(
    model, train: SplitArrays, modality: str, per_feature: bool, batch: int, seed: int
) -> torch.Tensor:
    """Std of the encoder input over (a subset of) the training split, float64 accumulation."""
    total = square = None
    count = 0
    device = next(model.parameters()).device
    array = train.inputs[modality]
    for x in stored_rows(array, device, batch, scale_rows(len(array), seed)):
        z = model.prepare({modality: x}, train=False)[modality].double()
        if not per_feature:
            z = z.reshape(-1)
        s, q = z.sum(0), (z * z).sum(0)
        total, square = (s, q) if total is None else (total + s, square + q)
        count += z.shape[0]
    mean = total / count
    return (square / count - mean * mean).clamp_min(0).sqrt().float()


def special_tokens(train: SplitArrays, modality: str, pad_id: int, seed: int) -> set[int]:
    """The pad id and every id seen at a kept position (first token, segment ends) in training rows."""
    array = train.inputs[modality]
    rows = np.asarray(array[scale_rows(len(array), seed)])  # (n, 3, L)
    keep = kept_positions(torch.from_numpy(rows[:, 1]), torch.from_numpy(rows[:, 2]))
    return {pad_id, *np.unique(rows[:, 0][keep.numpy()]).tolist()}


def kept_positions(mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: padding, position 0 and the last attended position of every segment."""
    attended = mask > 0
    nxt_attended = torch.zeros_like(attended)
    nxt_attended[:, :-1] = attended[:, 1:]
    nxt_type_differs = torch.ones_like(attended)
    nxt_type_differs[:, :-1] = types[:, 1:] != types[:, :-1]
    segment_end = attended & (~nxt_attended | nxt_type_differs)
    first = torch.zeros_like(attended)
    first[:, 0] = True
    return ~attended | first | segment_end


def build_corruption(model, preset, data, modality: str, batch: int, seed: int) -> Corruption:
    """The corruption of one modality of a checkpoint, from its preset and the training split."""
    spec = next(m for m in preset.modalities if m.name == modality)
    train = data.split("train")
    if spec.input.kind == "tokens":
        text = data.manifest.preprocessing.get("text", {})
        vocab = text.get("vocab_size") or getattr(spec.encoder, "vocab_size", None)
        pad = text.get("pad_token_id") or 0
        vocab = vocab or int(np.asarray(train.inputs[modality])[:, 0].max()) + 1
        specials = special_tokens(train, modality, pad, seed)
        allowed = torch.tensor([i for i in range(vocab) if i not in specials])
        device = next(model.parameters()).device
        return Corruption(modality, "tokens", allowed=allowed.to(device))
    per_feature = spec.input.kind == "vector"
    return Corruption(modality, "gaussian", std=input_std(model, train, modality, per_feature, batch, seed))


class Corrupter:
    """Applies a Corruption batch by batch; one generator stream per modality, restarted per σ."""

    def __init__(self, corruption: Corruption, sigma: float, seed: int, device: torch.device):
        self.c, self.sigma = corruption, sigma
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.scale = None if corruption.std is None else (sigma * corruption.std).to(device)

    @property
    def before_pipeline(self) -> bool:
        """Tokens are swapped in the stored ids; noise is added to the encoder input."""
        return self.c.kind == "tokens"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The corrupted batch."""
        if self.c.kind == "tokens":
            return replace_tokens(x, self.sigma, self.c.allowed, self.generator)
        noise = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return noise.mul_(self.scale.to(x.dtype)).add_(x)  # x + σ·std·ε, in the noise's buffer


def replace_tokens(
    x: torch.Tensor, p: float, allowed: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Stored rows (B, 3, L) with each content id replaced with probability p by a random allowed id."""
    ids = x[:, 0]
    u = torch.rand(ids.shape, generator=generator, device=x.device)
    pick = torch.randint(len(allowed), ids.shape, generator=generator, device=x.device)
    swap = (u < p) & ~kept_positions(x[:, 1], x[:, 2])
    out = x.clone()
    out[:, 0] = torch.where(swap, allowed[pick].to(ids.dtype), ids)
    return out
