"""The training loop of Algorithm 1: for each stage, for each epoch, for each batch, step.

Objects are injected (model, method, optimizer factory, batches, SamStep, a checkpoint
sink, an event callback); the trainer never reads presets, prints, or knows a method by name.
Ctrl-C and SIGTERM are honoured at the next step boundary: `last.safetensors` is written, then
KeyboardInterrupt propagates. A non-finite loss raises DivergedError.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from igm_cli.distributed.ddp import SingleProcess
from igm_cli.errors import DivergedError

from .batches import SplitBatches, epoch_order
from .evaluate import evaluate_model
from .optim import set_learning_rate
from .sam import SamStep, batch_norms, frozen_bn_stats
from .sharded import evaluate_sharded
from .stages import Stage
from .train_state import CheckpointSink, TrainState, state_from_dict, state_to_dict

if TYPE_CHECKING:
    from igm_cli.methods.base import Method, Substep

Event = Callable[[str, dict[str, Any]], None]
__all__ = ["CheckpointSink", "TrainState", "Trainer", "TrainerConfig", "state_from_dict", "state_to_dict"]


@dataclass
class TrainerConfig:
    """Plain settings of the loop (already validated by the preset)."""

    batch_size: int
    eval_batch_size: int
    fusion: str
    selection: str
    seed: int
    clip_norm: float | None = None


class Trainer:
    """Runs a method's StageSchedule; what a step computes is the method's (igm_cli/methods)."""

    parallel = SingleProcess()  # one process, unless the pipeline injects a DataParallel

    def __init__(
        self,
        model: torch.nn.Module,
        method: Method,
        *,
        make_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
        lr_at: Callable[[int, int], float],
        train: SplitBatches,
        val: SplitBatches,
        sam: SamStep,
        config: TrainerConfig,
        sink: CheckpointSink,
        on_event: Event | None = None,
        parallel: SingleProcess | None = None,
    ):
        self.model, self.method, self.config = model, method, config
        self.parallel = parallel or SingleProcess()  # torchrun: igm_cli/distributed/ddp.py
        self.schedule = method.schedule()
        self.make_optimizer, self.lr_at = make_optimizer, lr_at
        self.train_batches, self.val_batches = train, val
        self.sam, self.sink = sam, sink
        self.on_event = on_event or (lambda kind, payload: None)
        self._interrupted = False
        self._sam_moved: dict[str, float] | None = None
        self._norms: list[torch.nn.Module] = []  # BatchNorms of the trained modules

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
                resuming = bool(state.epoch or state.batch)
                paired = self.method.begin_stage(self.model, stage, state.gm_meter if resuming else None)
                substeps = self.method.substeps(self.model, stage, params)
                self.on_event(
                    "stage_start",
                    {
                        "stage": stage.index,
                        "active": list(stage.active),
                        "epochs": stage.epochs,
                        "source": stage.source,
                        "paired": paired,
                        "gm": self.method.uses_gm,
                    },
                )
                for epoch in range(state.epoch, stage.epochs):
                    set_learning_rate(optimizer, self.lr_at(epoch, stage.epochs))
                    self._run_epoch(stage, epoch, state, optimizer, substeps)
                    # once per epoch: evaluate, select, checkpoint
                    self._end_epoch(stage, epoch, state, optimizer)
            state.finished = True
            return state

    def _run_epoch(self, stage: Stage, epoch: int, state: TrainState, optimizer, substeps) -> None:
        self._activate(stage)
        self._sam_moved = None
        order = epoch_order(len(self.train_batches), self.config.seed, stage.index, epoch)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.train_batches.device)
        try:
            batches = self.parallel.iterate(self.train_batches, self.config.batch_size, order, state)
            for stored, labels in batches:  # under torchrun: this rank's part of each global batch
                inputs = self.model.prepare(stored, train=True)  # augment once: both SAM passes see it
                for substep in substeps:
                    loss_sum += self._step(substep, optimizer, inputs, labels) * self.parallel.share
                state.batch += 1
                state.step += 1
                self.on_event("step", {"stage": stage.index, "epoch": epoch, "batch": state.batch})
                self._interrupted = self.parallel.any(self._interrupted, loss_sum.device)  # all ranks agree
                if self._interrupted:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.sam.restore_pending()
            if self._interrupted:  # agreed by every rank (a second Ctrl-C is not)
                self.parallel.sum_(loss_sum)
            state.loss_sum += float(loss_sum)
            state.gm_meter = self.method.meter_state()
            self.sink.save("last", state, optimizer)
            raise
        self.parallel.sum_(loss_sum)
        if not torch.isfinite(loss_sum):
            raise DivergedError(
                f"training diverged: non-finite loss in stage {stage.index} epoch {epoch} "
                f"(lr {optimizer.param_groups[0]['lr']:g})"
            )
        state.loss_sum += float(loss_sum)

    def _end_epoch(self, stage: Stage, epoch: int, state: TrainState, optimizer) -> None:
        args = (self.model, self.val_batches, self.config.eval_batch_size, self.config.fusion)
        world = self.parallel.world  # under torchrun: sharded, the same metrics on every rank
        val = evaluate_sharded(world, *args) if world.distributed else evaluate_model(*args)
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
        state.gm_meter = self.method.meter_state()
        self.sink.log(record)
        self.on_event("epoch_end", record)
        stage_done = state.epoch == stage.epochs
        restart = stage_done and self.method.restarts_from_best
        if improved and restart:  # the next stage starts from the best weights: write them first
            self.sink.save("best", state, None, {"val": val})
        if restart:  # T then comes from these weights, as the released code computes it
            self.model.load_state_dict(self.sink.best_weights())
        if stage_done:  # collect T first, so a best checkpoint holds the T this stage produced
            self._end_stage(stage, state)
        if improved and not restart:
            self.sink.save("best", state, None, {"val": val})
        if stage_done:
            state.stage, state.epoch, state.gm_meter = stage.index + 1, 0, {}
        # At a stage boundary the next stage starts with a fresh optimizer over other
        # parameters: the finished stage's optimizer state must not be carried into it.
        self.sink.save("last", state, None if stage_done else optimizer)
        self._interrupted = self.parallel.any(self._interrupted, self.train_batches.device)
        if self._interrupted:
            raise KeyboardInterrupt

    # ------------------------------------------------------------------ one step

    def _step(self, substep: Substep, optimizer, inputs, labels) -> torch.Tensor:
        """One optimizer step: gradients → [SAM second pass at θ + ε] → method's hook → step."""
        optimizer.zero_grad(set_to_none=True)
        loss = self.parallel.gradients(substep, inputs, labels, False, self.sam.enabled)
        if self.sam.enabled:
            self.sam.perturb(substep.params)
            if self._sam_moved is None:  # measured once per epoch: did ε change any weight?
                self._sam_moved = self.sam.realized()
            optimizer.zero_grad(set_to_none=True)
            with frozen_bn_stats(self._norms):
                self.parallel.gradients(substep, inputs, labels, True, True)
            self.sam.restore()
        self.method.before_step(substep)
        if self.config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(substep.params, self.config.clip_norm)
        optimizer.step()
        self.method.after_step(substep)
        return loss

    # ------------------------------------------------------------------ stage helpers

    def _activate(self, stage: Stage) -> list[torch.nn.Parameter]:
        """Train mode for the stage's modules only; returns their parameters (each once)."""
        self.model.eval()
        modules = self.method.train_modules(self.model, stage)
        for module in modules:
            module.train()
        self._norms = [bn for module in modules for bn in batch_norms(module)]
        self.parallel.activate(self.model, self.method, stage)
        return list(dict.fromkeys(p for module in modules for p in module.parameters()))

    def _end_stage(self, stage: Stage, state: TrainState) -> None:
        """The method's end-of-stage work (IGM: collect Ȳ and T), then the stage record."""
        order = epoch_order(len(self.train_batches), self.config.seed, stage.index, stage.epochs)

        def batches_for(modality: str):
            branch = self.model.branch(modality)
            for x, _ in self.parallel.whole_batches(self.train_batches, self.config.batch_size, order):
                yield branch.prepare(x[modality], train=self.method.augmented_covariance)

        report = self.method.end_stage(self.model, stage, batches_for)
        record = {"kind": "stage", "stage": stage.index, "active": list(stage.active), "source": stage.source}
        record.update(report)
        self.sink.log(record)
        self.on_event("stage_end", record)

    @contextmanager
    def _sigint_deferred(self) -> Iterator[None]:
        """Turn the first Ctrl-C or SIGTERM (preemption) into a flag read at step boundaries.

        A second signal of the same kind gets its previous handler, i.e. is immediate (on one
        process: under torchrun every rank gets the terminal's signal and the agent's copy).
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            self._interrupted = True
            if not self.parallel.world.distributed:  # torchrun forwards the terminal's signal: keep deferring
                signal.signal(signum, previous[signum])

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
