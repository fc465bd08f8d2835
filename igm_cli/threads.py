"""How many CPU threads torch uses: one for small models, torch's default for large ones.

Measured with `python bench/threads.py` on a 2-core shared CPU box (README, "Threads"):
below SMALL_MODEL_PARAMS parameters a step is a few small matmuls, and a second thread
costs more in synchronisation (and in waiting for a core on a busy machine) than it saves;
convolutional encoders of millions of parameters gain from every core.
"""

from __future__ import annotations

import torch

from .errors import UsageError

SMALL_MODEL_PARAMS = 500_000
"""Models with fewer parameters run on one thread unless --threads says otherwise."""

_TORCH_DEFAULT = torch.get_num_threads()  # before anything changes it: the machine's default


def choose_threads(requested: int | None, num_params: int) -> int:
    """The thread count to use: `requested`, else 1 below SMALL_MODEL_PARAMS, else torch's default."""
    if requested is not None:
        if requested < 1:
            raise UsageError(f"--threads must be at least 1 (got {requested})")
        return requested
    return 1 if num_params < SMALL_MODEL_PARAMS else _TORCH_DEFAULT


def use_threads(requested: int | None, model: torch.nn.Module) -> int:
    """Choose for this model, apply it to torch, and return it (it is recorded in results)."""
    n = choose_threads(requested, sum(p.numel() for p in model.parameters()))
    torch.set_num_threads(n)
    return n
