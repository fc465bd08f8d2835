"""What a forked worker changes in itself before training (faults injected on one rank)."""

from __future__ import annotations

import os
import signal

from igm_cli.engine.trainer import Trainer
from igm_cli.errors import DivergedError

AT_STEP = 7


def _on_step(rank: int, wanted: int, action) -> None:
    if rank != wanted:
        return
    step = Trainer._step
    calls = {"n": 0}

    def patched(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == AT_STEP:
            action(self)
        return step(self, *args, **kwargs)

    Trainer._step = patched


def interrupt_rank1(rank: int) -> None:
    """Rank 1 alone gets the Ctrl-C/SIGTERM flag: every rank must stop at the same step."""
    _on_step(rank, 1, lambda trainer: setattr(trainer, "_interrupted", True))


def diverge_rank1(rank: int) -> None:
    """Rank 1 raises an error with its own exit code (4)."""

    def fail(trainer):
        raise DivergedError("training diverged: injected on this rank")

    _on_step(rank, 1, fail)


def kill_rank1(rank: int) -> None:
    """Rank 1 dies without a word (as by the OOM killer)."""
    _on_step(rank, 1, lambda trainer: os.kill(os.getpid(), signal.SIGKILL))
