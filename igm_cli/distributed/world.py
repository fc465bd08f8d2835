"""Who this process is among torchrun's ranks, and the few collectives training needs.

`World.single()` is the one-process no-op: every collective returns its input, so the
trainer calls the same verbs with or without torchrun. A torchrun worker opens its process
group with `World.from_env` (gloo on CPU, NCCL on CUDA, one device per local rank) and a
collective timeout, so a lost peer ends the job instead of hanging it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT_ENV = "IGM_DDP_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
"""Seconds a collective may wait for a peer (rank 0 writing a large checkpoint included)."""


def launched_by_torchrun() -> bool:
    """Whether torchrun (or `igm train --nproc`) started this process: WORLD_SIZE and RANK are set."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def env_rank() -> int:
    """This worker's rank from torchrun's environment (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def join_world(device: torch.device) -> World:
    """The torchrun job's World (process group opened), or the single-process one."""
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
        return World.from_env(device)
    return World.single()


@dataclass
class World:
    """Rank, size and device of this process; collectives over every rank."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @classmethod
    def single(cls) -> World:
        """One process, no process group."""
        return cls()

    @classmethod
    def from_env(cls, device: torch.device) -> World:
        """Join torchrun's process group; `device` (cpu or cuda) picks gloo or NCCL."""
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)  # one device per local rank
        if not dist.is_initialized():
            seconds = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
            dist.init_process_group(backend, timeout=timedelta(seconds=seconds))
        return cls(rank, size, local_rank, backend)

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.size > 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes the run directory, checkpoints, metrics and progress."""
        return self.rank == 0

    def device_for(self, device: torch.device) -> torch.device:
        """CUDA: one device per local rank; CPU unchanged."""
        if device.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device

    # ------------------------------------------------------------ collectives

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place (every rank gets the same result)."""
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Rank `src`'s values on every rank, in place."""
        if self.distributed:
            dist.broadcast(tensor, src)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's tensor (all of the same shape), in rank order."""
        if not self.distributed:
            return [tensor]
        out = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(out, tensor.contiguous())
        return out

    def batch_mean(self, rows: torch.Tensor) -> torch.Tensor:
        """Mean over the global batch of every rank's rows (B_rank, d)."""
        if not self.distributed:
            return rows.mean(0)
        stats = torch.cat([rows.sum(0), rows.new_tensor([rows.shape[0]])])
        self.all_reduce_(stats)
        return stats[:-1] / stats[-1]

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when it is True on one (agreeing on a stop at a step boundary)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_text(self, text: str) -> str:
        """Rank 0's string on every rank (UTF-8 bytes in two broadcasts; no pickle)."""
        if not self.distributed:
            return text
        device = torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")
        data = torch.tensor(list(text.encode()), dtype=torch.uint8, device=device)
        length = self.broadcast_(torch.tensor([len(data)], dtype=torch.int64, device=device))
        buffer = data if self.rank == 0 else torch.empty(int(length), dtype=torch.uint8, device=device)
        return bytes(self.broadcast_(buffer).tolist()).decode()

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group (at the end of a worker)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
