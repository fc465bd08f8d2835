"""The training loop of Algorithm 1: for each stage, for each epoch, for each batch, step.

Objects are injected (model, schedule, optimizer factory, batches, FlatProjector,
SamStep, a checkpoint sink, an event callback); the trainer never reads presets or prints.
Ctrl-C and SIGTERM are honoured at the next step boundary: `last.safetensors` is written, then
KeyboardInterrupt propagates. A non-finite loss raises DivergedError.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from igm_cli.errors import DivergedError
from igm_cli.models import LateFusionModel

from .batches import SplitBatches, epoch_order
from .evaluate import evaluate_model
from .flat_projector import FlatProjector
from .fusion import fuse
from .optim import set_learning_rate
from .sam import SamStep, batch_norms, frozen_bn_stats
from .stages import Stage, StageSchedule

Event = Callable[[str, dict[str, Any]], None]


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint, enough to resume exactly."""

    stage: int = 0
    epoch: int = 0  # epoch within the stage
    batch: int = 0  # next batch within the epoch
    step: int = 0  # optimizer steps so far
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


@dataclass
class TrainerConfig:
    """Plain settings of the loop (already validated by the preset)."""

    batch_size: int
    eval_batch_size: int
    fusion: str
    selection: str
    joint_loss: str
    seed: int


class Trainer:
    """Runs a StageSchedule on a LateFusionModel."""

    def __init__(
        self,
        model: LateFusionModel,
        schedule: StageSchedule,
        *,
        make_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
        lr_at: Callable[[int, int], float],
        train: SplitBatches,
        val: SplitBatches,
        projector: FlatProjector,
        sam: SamStep,
        config: TrainerConfig,
        sink: CheckpointSink,
        on_event: Event | None = None,
    ):
        self.model, self.schedule, self.config = model, schedule, config
        self.make_optimizer, self.lr_at = make_optimizer, lr_at
        self.train_batches, self.val_batches = train, val
        self.projector, self.sam, self.sink = projector, sam, sink
        self.on_event = on_event or (lambda kind, payload: None)
        self._interrupted = False
        self._sam_moved: dict[str, float] | None = None
        self._norms: list[torch.nn.Module] = []  # BatchNorms of the active branches

    # ------------------------------------------------------------------ the loop

    def fit(self, state: TrainState, optimizer_state: Callable | None = None) -> TrainState:
        """Train from `state` to the end of the schedule; `optimizer_state` restores a resume."""
        with self._sigint_deferred():
            for stage in self.schedule.stages[state.stage :]:
                params = self._activate(stage)
                optimizer = self.make_optimizer(params)
                if optimizer_state is not None:
                    optimizer_state(optimizer)
                    optimizer_state = None
                paired = self._begin_stage(stage, state)
                self.on_event(
                    "stage_start",
                    {
                        "stage": stage.index,
                        "active": list(stage.active),
                        "epochs": stage.epochs,
                        "source": stage.source,
                        "paired": paired,
                        "gm": self.projector.enabled,
                    },
                )
                for epoch in range(state.epoch, stage.epochs):
                    set_learning_rate(optimizer, self.lr_at(epoch, stage.epochs))
                    self._run_epoch(stage, epoch, state, optimizer, params)
                    # once per epoch: evaluate, select, checkpoint
                    self._end_epoch(stage, epoch, state, optimizer)
            state.finished = True
            return state

    def _run_epoch(self, stage: Stage, epoch: int, state: TrainState, optimizer, params) -> None:
        self._activate(stage)
        self._sam_moved = None
        order = epoch_order(len(self.train_batches), self.config.seed, stage.index, epoch)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.train_batches.device)
        try:
            for stored, labels in self.train_batches.iterate(self.config.batch_size, order, state.batch):
                inputs = self.model.prepare(stored, train=True)  # augment once: both SAM passes see it
                loss_sum += self._step(stage, optimizer, params, inputs, labels)
                state.batch += 1
                state.step += 1
                self.on_event("step", {"stage": stage.index, "epoch": epoch, "batch": state.batch})
                if self._interrupted:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.sam.restore_pending()
            state.loss_sum += float(loss_sum)
            state.gm_meter = self.projector.meter_state()
            self.sink.save("last", state, optimizer)
            raise
        if not torch.isfinite(loss_sum):
            raise DivergedError(
                f"training diverged: non-finite loss in stage {stage.index} epoch {epoch} "
                f"(lr {optimizer.param_groups[0]['lr']:g})"
            )
        state.loss_sum += float(loss_sum)

    def _end_epoch(self, stage: Stage, epoch: int, state: TrainState, optimizer) -> None:
        val = evaluate_model(self.model, self.val_batches, self.config.eval_batch_size, self.config.fusion)
        metric = val["fused"][self.config.selection]
        improved = state.best_metric is None or metric > state.best_metric
        state.epochs_done += 1
        record = {
            "kind": "epoch",
            "stage": stage.index,
            "epoch": epoch,
            "epochs_done": state.epochs_done,
            "step": state.step,
            "active": list(stage.active),
            "train_loss": state.loss_sum / max(1, self.train_batches.num_batches(self.config.batch_size)),
            "lr": optimizer.param_groups[0]["lr"],
            "val": val,
            "sam_realized": self._sam_moved,
            "best": improved,
        }
        if improved:
            state.best_metric, state.best_epoch, state.best_stage = metric, state.epochs_done, stage.index
        state.epoch, state.batch, state.loss_sum = epoch + 1, 0, 0.0
        state.gm_meter = self.projector.meter_state()
        self.sink.log(record)
        self.on_event("epoch_end", record)
        stage_done = state.epoch == stage.epochs
        if stage_done:  # collect T first, so a best checkpoint holds the T this stage produced
            self._end_stage(stage, state)
        if improved:
            self.sink.save("best", state, None, {"val": val})
        if stage_done:
            state.stage, state.epoch, state.gm_meter = stage.index + 1, 0, {}
        # At a stage boundary the next stage starts with a fresh optimizer over other
        # parameters: the finished stage's optimizer state must not be carried into it.
        self.sink.save("last", state, None if stage_done else optimizer)
        if self._interrupted:
            raise KeyboardInterrupt

    # ------------------------------------------------------------------ one step

    def _step(self, stage: Stage, optimizer, params, inputs, labels) -> torch.Tensor:
        """One IGM step: loss → backward → [SAM second pass] → ∇·T → optimizer step."""
        optimizer.zero_grad(set_to_none=True)
        loss = self._loss(stage, inputs, labels)
        loss.backward()
        if self.sam.enabled:
            self.sam.perturb(params)
            if self._sam_moved is None:  # measured once per epoch: did ε change any weight?
                self._sam_moved = self.sam.realized()
            optimizer.zero_grad(set_to_none=True)
            with frozen_bn_stats(self._norms):
                self._loss(stage, inputs, labels).backward()
            self.sam.restore()
        self.projector.apply()
        optimizer.step()
        return loss.detach()

    def _loss(self, stage: Stage, inputs, labels) -> torch.Tensor:
        logits = {m: self.model.branch(m)(inputs[m]) for m in stage.active}
        if len(stage.active) == 1:
            return F.cross_entropy(logits[stage.active[0]], labels)
        if self.config.joint_loss == "fused":
            return F.nll_loss(fuse(logits, self.config.fusion).clamp_min(1e-12).log(), labels)
        return sum(F.cross_entropy(z, labels) for z in logits.values())

    # ------------------------------------------------------------------ stage helpers

    def _activate(self, stage: Stage) -> list[torch.nn.Parameter]:
        """Train mode for the active branches only; returns their parameters."""
        self.model.eval()
        for m in stage.active:
            self.model.branch(m).train()
        self._norms = [bn for m in stage.active for bn in batch_norms(self.model.branch(m))]
        return [p for m in stage.active for p in self.model.branch(m).parameters()]

    def _begin_stage(self, stage: Stage, state: TrainState) -> list[str]:
        if len(stage.active) != 1:
            return []
        paired = self.projector.begin_stage(self.model, stage.active[0], stage.source)
        if state.epoch or state.batch:  # resuming mid-stage
            self.projector.load_meter(state.gm_meter)
        return paired

    def _end_stage(self, stage: Stage, state: TrainState) -> None:
        """Collect Ȳ and T of the modality that just trained (Algorithm 1, lines 11–13)."""
        removed = self.projector.stage_report()
        if self.projector.enabled and len(stage.active) == 1:
            modality = stage.active[0]
            order = epoch_order(len(self.train_batches), self.config.seed, stage.index, stage.epochs)
            branch = self.model.branch(modality)
            batches = (
                branch.prepare(x[modality], train=False)
                for x, _ in self.train_batches.iterate(self.config.batch_size, order)
            )
            self.projector.collect(self.model, modality, batches)
        record = {
            "kind": "stage",
            "stage": stage.index,
            "active": list(stage.active),
            "source": stage.source,
            "gm_removed_share": removed,
            "T_trace_ratio": {m: self.projector.strength(m) for m in stage.active},
        }
        self.sink.log(record)
        self.on_event("stage_end", record)

    @contextmanager
    def _sigint_deferred(self) -> Iterator[None]:
        """Turn the first Ctrl-C or SIGTERM (preemption) into a flag read at step boundaries.

        A second signal of the same kind gets its previous handler, i.e. is immediate.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            self._interrupted = True
            signal.signal(signum, previous[signum])

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def state_to_dict(state: TrainState) -> dict[str, Any]:
    """JSON-able form for checkpoint metadata."""
    return asdict(state)


def state_from_dict(data: dict[str, Any]) -> TrainState:
    """Inverse of `state_to_dict`."""
    return TrainState(**data)
