"""The interface between the Trainer and a training method (DESIGN §1, "methods are modules").

The Trainer asks a method four things and knows no method by name:

1. which modules a stage trains (`train_modules`; the optimizer covers their parameters),
2. the batch's optimizer steps as `Substep`s, each of which computes the gradients of its
   loss (`Substep.gradients` may run several backward passes, e.g. DGL's routing),
3. what happens to the gradients before each optimizer step (`before_step`) and after it
   (`after_step`, e.g. MLA's projector update),
4. how branch and fused predictions are formed (`build_model`'s forward gives per-branch
   logits, `fusion` names how `engine.fusion.fuse` turns them into fused probabilities).

SAM wraps every substep of every method: the Trainer perturbs `Substep.params`, calls
`gradients` again at θ + ε, restores θ, then calls `before_step` and steps.
State a method keeps across steps (T, covariances, MLA's projector) goes into checkpoints
through `state_tensors` / `load_state_tensors`, so `--resume` continues exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from igm_cli.distributed.world import World
from igm_cli.engine.stages import Stage, StageSchedule, igm_epochs_per_modality
from igm_cli.preset_schema import Preset

Gradients = Callable[[dict[str, torch.Tensor], torch.Tensor, bool], torch.Tensor]
BatchesFor = Callable[[str], Iterable[torch.Tensor]]


COMMON_KEYS = (
    "name",
    "description",
    "dataset",
    "num_classes",
    "method",
    "recipe",
    "modalities",
    "optimizer",
    "schedule",
    "data",
    "selection",
    "seed",
    "device",
    "sam.ddp",
)
"""Preset keys every method reads (sam.ddp: under torchrun, whenever a step uses SAM)."""


@dataclass
class Substep:
    """One optimizer step of a batch: the parameters SAM perturbs and the gradient function.

    `gradients(inputs, labels, second_pass)` leaves .grad set and returns the detached loss;
    `second_pass` is True for SAM's pass at θ + ε.
    """

    key: str
    params: list[nn.Parameter]
    gradients: Gradients
    memo: dict[str, Any] = field(default_factory=dict)  # what a pass leaves for before/after_step


class Method:
    """Base of every method: single-stage, no gradient modification, no extra state."""

    name: ClassVar[str] = ""
    ddp_wrap: ClassVar[bool] = True
    """Under torchrun: DDP wraps the stage's branches; False: igm all-reduces the gradients itself."""
    world: World = World.single()
    """The ranks of a torchrun job (set by the pipeline); methods use it for their own statistics."""
    reads: ClassVar[tuple[str, ...]] = ()
    """Preset sections/keys this method reads besides COMMON_KEYS (for `igm presets show`)."""

    def __init__(self, preset: Preset):
        self.preset = preset

    # ------------------------------------------------------------ setup

    def trained_modalities(self) -> list[str]:
        """Branches the model builds and the data batches carry."""
        return self.preset.modality_names

    def build_model(
        self, input_shapes: dict[str, list[int]], num_classes: int, configs: dict[str, dict] | None = None
    ) -> nn.Module:
        """The model; forward(prepared inputs) → {modality: logits} (+ 'fused' for a fusion module).

        `configs`: transformers configs of pretrained encoders from a checkpoint (no weights read).
        """
        from igm_cli.models import build_model

        keep = self.trained_modalities()
        spec = self.preset.model_copy(
            update={"modalities": [m for m in self.preset.modalities if m.name in keep]}
        )
        return build_model(spec, input_shapes, num_classes, configs)

    def schedule(self) -> StageSchedule:
        """One stage training every branch for the baseline budget."""
        return StageSchedule([Stage(0, tuple(self.trained_modalities()), baseline_epochs(self.preset), None)])

    @property
    def sam_rho(self) -> float:
        """SAM radius of this method's steps (baselines: `sam.baseline_rho`, default 0)."""
        return self.preset.sam.baseline_rho

    @property
    def fusion(self) -> str:
        """How evaluation fuses the branches (a key of engine.fusion.FUSIONS)."""
        return self.preset.fusion

    @property
    def trainer_sam_rho(self) -> float:
        """ρ of the Trainer's SamStep (0 when the method perturbs inside its own step)."""
        return self.sam_rho

    @property
    def restarts_from_best(self) -> bool:
        """Whether each stage starts from the best checkpoint so far (recipe reference)."""
        return False

    @property
    def augmented_covariance(self) -> bool:
        """Whether end_stage's covariance batches get training augmentation (recipe reference)."""
        return False

    @property
    def selection_split(self) -> str:
        """The split whose fused metric selects the best epoch."""
        return "val"

    @property
    def eval_batch_size(self) -> int:
        """Batch size of evaluation."""
        return self.preset.data.eval_batch_size

    @property
    def drop_last(self) -> bool:
        """Whether training (and T's pass) drop a short last batch of each epoch."""
        return False

    @property
    def lr_epoch_offset(self) -> int:
        """Epochs added to a stage's epoch index by the step schedule (1: StepLR stepped before it)."""
        return 0

    @property
    def uses_gm(self) -> bool:
        """Whether T acts on head gradients (results.json then reports which layers it paired)."""
        return False

    def deviations(self) -> list[dict[str, str]]:
        """This method's departures from its paper, as `{"switch", "what"}` lines for results.json."""
        return []

    # ------------------------------------------------------------ training

    def train_modules(self, model: nn.Module, stage: Stage) -> list[nn.Module]:
        """Modules in training mode during `stage`; the optimizer covers their parameters."""
        return [model.branch(m) for m in stage.active]

    def substeps(self, model: nn.Module, stage: Stage, params: list[nn.Parameter]) -> list[Substep]:
        """The optimizer steps of one batch (built once per stage)."""
        raise NotImplementedError

    def loss_modules(self, model: nn.Module, stage: Stage) -> list[nn.Module]:
        """Modules every loss term passes through exactly once (the stage's branches by default).

        Under torchrun their output gradients are weighted by the rank's share of the batch,
        and with `ddp_wrap` they are the modules DDP wraps.
        """
        return [model.branch(m) for m in stage.active]

    def before_step(self, substep: Substep) -> None:
        """Modify gradients before the optimizer step (after SAM's second pass)."""

    def after_step(self, substep: Substep) -> None:
        """Update per-step state after the optimizer step."""

    def begin_stage(self, model: nn.Module, stage: Stage, meter: dict | None) -> list[str]:
        """Prepare a stage; `meter` continues a stage resumed mid-way. Returns paired layer names."""
        return []

    def end_stage(self, model: nn.Module, stage: Stage, batches_for: BatchesFor) -> dict[str, Any]:
        """Work after a stage's last epoch; returns fields of the stage record."""
        return {"gm_removed_share": {}, "T_trace_ratio": {m: {} for m in stage.active}}

    # ------------------------------------------------------------ checkpoint state

    def meter_state(self) -> dict[str, list[float]]:
        """Mid-stage accumulators saved in TrainState."""
        return {}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors this method keeps across steps, for checkpoints."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of `state_tensors` (given every tensor of the checkpoint)."""


def baseline_epochs(preset: Preset) -> int:
    """Epochs of a single-stage method: `baseline.epochs`, or IGM's largest per-modality budget."""
    return preset.baseline.epochs or max(igm_epochs_per_modality(preset).values())


def cross_entropy_substep(key: str, params: list[nn.Parameter], loss_of: Callable) -> Substep:
    """A substep whose gradients are one backward of `loss_of(inputs, labels)`."""

    def gradients(inputs: dict[str, torch.Tensor], labels: torch.Tensor, second_pass: bool) -> torch.Tensor:
        loss = loss_of(inputs, labels)
        loss.backward()
        return loss.detach()

    return Substep(key, params, gradients)
