"""The loss a landscape plots: one branch's or the fused prediction's NLL on fixed batches.

The loss is the one `igm eval` reports (engine.evaluate.score): NLL of a branch's
softmax, or of the fused probabilities, clamped at 1e-12. The model is in eval mode
(BatchNorm uses its running statistics, no dropout) and inputs go through the
evaluation pipeline (no augmentation), so a point of the surface is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from igm_cli.engine.batches import SplitBatches
from igm_cli.engine.evaluate import eval_mode
from igm_cli.engine.fusion import fuse
from igm_cli.models import LateFusionModel

from .directions import is_moved

FUSED = "fused"
Batch = tuple[dict[str, torch.Tensor], torch.Tensor]  # inputs per modality, labels (B,)


class Objective(Protocol):
    """What the grid and the Hessian need: a loss over fixed data at the current weights."""

    def evaluate(self) -> tuple[float, float]:
        """(mean loss, accuracy) without gradients."""
        ...

    def loss_terms(self) -> Iterator[torch.Tensor]:
        """Differentiable terms whose sum is the mean loss (one per batch)."""
        ...


def subset_indices(n: int, batches: int, batch_size: int, seed: int) -> torch.Tensor:
    """A seeded subset of `batches`·`batch_size` of n samples, sorted; 0 batches = all."""
    if batches <= 0 or batches * batch_size >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[: batches * batch_size].sort().values


def fixed_batches(split: SplitBatches, index: torch.Tensor, batch_size: int) -> list[Batch]:
    """The subset as a list of stored (not yet prepared) batches, read once."""
    return [split.take(index[i : i + batch_size]) for i in range(0, len(index), batch_size)]


class SubsetObjective:
    """NLL and accuracy of one branch (`modality`) or of the fused model ('fused')."""

    def __init__(self, model: LateFusionModel, batches: list[Batch], modality: str, fusion: str):
        self.model, self.batches, self.modality, self.fusion = model, batches, modality, fusion
        self.size = sum(len(y) for _, y in batches)

    def probabilities(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities (B, C) of the scope for one batch."""
        if self.modality == FUSED:
            logits = self.model(self.model.prepare(inputs, train=False))
            return fuse({m: z.float() for m, z in logits.items()}, self.fusion)
        branch = self.model.branch(self.modality)
        x = branch.prepare(inputs[self.modality], train=False)
        # the model's own forward of that one modality: a branch, or MLA's shared head / DGL's module
        return torch.softmax(self.model({self.modality: x})[self.modality].float(), -1)

    def batch_terms(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Per batch: (sum of NLL / N, number correct), in eval mode."""
        with eval_mode(self.model):
            for inputs, labels in self.batches:
                probs = self.probabilities(inputs)
                nll = torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum")
                yield nll / self.size, (probs.argmax(1) == labels).sum()

    def loss_terms(self) -> Iterator[torch.Tensor]:
        """Differentiable per-batch terms summing to the mean loss."""
        for term, _ in self.batch_terms():
            yield term

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """(mean loss, accuracy) on the fixed batches."""
        loss, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        for term, right in self.batch_terms():  # accumulate on the device: one sync at the end
            loss, correct = loss.to(term.device) + term, correct.to(right.device) + right
        return float(loss), int(correct) / self.size


def scope_parameters(model: LateFusionModel, modality: str) -> list[tuple[str, torch.nn.Parameter]]:
    """Named parameters the landscape moves: a branch's (or all), weights of dim ≥ 2 only.

    Names are the model's own (`branches.kar.head.0.weight`), so a branch gets the same
    directions whether it is plotted alone or as part of the fused model.
    """
    prefix = "" if modality == FUSED else f"branches.{modality}."
    return [(n, p) for n, p in model.named_parameters() if n.startswith(prefix) and is_moved(p)]
