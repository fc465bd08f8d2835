"""The IGM engine: flat projection, SAM, stage schedule, fusion, metrics, trainer."""

from .flat_projector import FlatProjector
from .projection import batch_mean_outer, project_grad_, projection_matrix
from .sam import SamStep, frozen_bn_stats
from .stages import Stage, StageSchedule
from .trainer import Trainer, TrainState

__all__ = [
    "FlatProjector",
    "SamStep",
    "Stage",
    "StageSchedule",
    "TrainState",
    "Trainer",
    "batch_mean_outer",
    "frozen_bn_stats",
    "project_grad_",
    "projection_matrix",
]
