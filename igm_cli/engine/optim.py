"""Base optimizers and the per-stage learning-rate schedule (a pure function of the epoch)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from igm_cli.presets import Optimizer, Schedule


def build_optimizer(spec: Optimizer, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """A fresh optimizer for one stage's parameters."""
    params = list(params)
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)


def learning_rate(schedule: Schedule, base_lr: float, epoch: int, epochs: int, step_offset: int = 0) -> float:
    """LR of `epoch` (0-based) of a stage of `epochs` epochs; stateless, so resume is exact.

    `step_offset=1`: the released code's StepLR.step() before each epoch (decay one epoch early).
    """
    if schedule.name == "step":
        lr = base_lr * schedule.gamma ** ((epoch + step_offset) // schedule.step_size)
    elif schedule.name == "cosine":
        lr = base_lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    else:
        lr = base_lr
    return lr * (schedule.first_epoch_factor if epoch == 0 else 1.0)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the LR of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
