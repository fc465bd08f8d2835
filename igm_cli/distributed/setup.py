"""What a training run needs to run on N ranks: GlobalBatchNorm, a batch split check, its record."""

from __future__ import annotations

from typing import Any

from torch import nn

from igm_cli.errors import PresetError

from .ddp import DataParallel
from .global_bn import to_global_batch_norm
from .world import World


def check_split(n: int, batch_size: int, size: int) -> None:
    """Every rank must get at least one sample of every global batch (the last one included).

    ... and own at least one whole batch of the covariance pass.
    """
    if -(-n // batch_size) < size:
        raise PresetError(
            f"data.batch_size: {n} training samples make fewer batches of {batch_size} than the "
            f"{size} processes; choose a smaller batch size or fewer processes"
        )
    last = n % batch_size
    if batch_size < size or 0 < last < size:
        short = batch_size if batch_size < size else last
        raise PresetError(
            f"data.batch_size: a training batch of {short} samples leaves a rank of {size} processes "
            f"without data ({n} training samples); choose a batch size whose last batch has at least "
            f"{size} samples, or fewer processes"
        )


def data_parallel(world: World, model: nn.Module, preset, n_train: int) -> DataParallel | None:
    """The DataParallel of a torchrun job (BatchNorm made global in `model`), None on one process."""
    if not world.distributed:
        return None
    if preset.recipe == "reference":  # its in-step autograd.grad bypasses DDP; the code is single-process
        raise PresetError(
            "recipe: reference reproduces the released single-process code and does not run under "
            "torchrun (its SAM uses torch.autograd.grad, which bypasses DDP); use recipe: paper"
        )
    check_split(n_train, preset.data.batch_size, world.size)
    to_global_batch_norm(model)
    return DataParallel(world, preset.seed, preset.sam.ddp)


def distributed_record(world: World, batch_size: int, sam_mode: str) -> dict[str, Any]:
    """results.json's `distributed`: how the global batch was divided."""
    per_rank = [len(range(r, batch_size, world.size)) for r in range(world.size)]
    return {
        "world_size": world.size,
        "backend": world.backend,
        "global_batch": batch_size,
        "per_rank_batch": sorted(per_rank, reverse=True),
        "rule": "global batch = data.batch_size, divided across ranks",
        "sam_ddp": sam_mode if world.distributed else None,
    }
