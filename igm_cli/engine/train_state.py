"""TrainState (where training stands, saved in every checkpoint) and the CheckpointSink protocol."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint, enough to resume exactly."""

    stage: int = 0
    epoch: int = 0  # epoch within the stage
    batch: int = 0  # next batch within the epoch
    step: int = 0  # batches stepped so far (MLA makes one optimizer step per modality each)
    epochs_done: int = 0
    loss_sum: float = 0.0  # training loss of the current epoch so far
    best_metric: float | None = None
    best_epoch: int | None = None
    best_stage: int | None = None
    finished: bool = False
    gm_meter: dict[str, list[float]] = field(default_factory=dict)


class CheckpointSink(Protocol):
    """Where the trainer's checkpoints and metric records go (a run directory)."""

    def save(
        self, kind: str, state: TrainState, optimizer: torch.optim.Optimizer | None, extra: dict | None = None
    ) -> None:
        """Write `best` (with `extra` such as its validation metrics) or `last`."""

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl."""

    def best_weights(self) -> dict[str, torch.Tensor]:
        """The model state of the best checkpoint so far (for methods that restart from it)."""


def state_to_dict(state: TrainState) -> dict[str, Any]:
    """JSON-able form for checkpoint metadata."""
    return asdict(state)


def state_from_dict(data: dict[str, Any]) -> TrainState:
    """Inverse of `state_to_dict`."""
    return TrainState(**data)
