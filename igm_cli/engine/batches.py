"""Mini-batches from prepared arrays, in a shuffle order fixed by (seed, stage, epoch).

A fixed order per epoch is what makes an interrupted-then-resumed run identical to an
uninterrupted one: resuming at batch b of an epoch replays the same order from b.
Small splits are moved to the device once; large ones are read from the memory map.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from igm_cli.data.prepared import SplitArrays

PRELOAD_BYTES = 1 << 30


def epoch_order(n: int, seed: int, stage: int, epoch: int) -> torch.Tensor:
    """The permutation of one epoch; depends only on its arguments."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + stage * 10_007 + epoch) % 2**63)
    return torch.randperm(n, generator=generator)


class SplitBatches:
    """Batched access to one split for the given modalities, on a device."""

    def __init__(
        self, split: SplitArrays, modalities: list[str], device: torch.device, drop_last: bool = False
    ):
        self.device = device
        self.drop_last = drop_last  # recipe reference: the code's loader drops a short last batch
        self.modalities = modalities
        size = sum(split.inputs[m].nbytes for m in modalities)
        self.preloaded = size <= PRELOAD_BYTES
        if self.preloaded:
            self.inputs = {m: torch.from_numpy(np.array(split.inputs[m])).to(device) for m in modalities}
        else:
            self.inputs = {m: split.inputs[m] for m in modalities}
        self.labels = torch.from_numpy(np.array(split.labels, dtype=np.int64)).to(device)

    def __len__(self) -> int:
        return len(self.labels)

    def num_batches(self, batch_size: int) -> int:
        """Batches per pass (the last one may be short, unless `drop_last`)."""
        return len(self) // batch_size if self.drop_last else -(-len(self) // batch_size)

    def take(self, index: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Inputs per modality and labels of the samples at `index`."""
        if self.preloaded:
            index = index.to(self.device)
            return {m: x[index] for m, x in self.inputs.items()}, self.labels[index]
        rows = np.sort(index.numpy())
        inputs = {m: torch.from_numpy(np.asarray(x[rows])).to(self.device) for m, x in self.inputs.items()}
        return inputs, self.labels[torch.from_numpy(rows).to(self.device)]

    def iterate(
        self, batch_size: int, order: torch.Tensor | None = None, start: int = 0
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Batches in `order` (default: sequential), beginning at batch index `start`."""
        order = torch.arange(len(self)) if order is None else order
        for b in range(start, self.num_batches(batch_size)):
            yield self.take(order[b * batch_size : (b + 1) * batch_size])
