"""Device names checked before any heavy import: a bad `--device` fails in well under a second.

Only a CUDA request imports torch (to ask whether CUDA is there); the engine, transformers
and scikit-learn are not imported at all.
"""

from __future__ import annotations

import re

from .errors import UsageError

DEVICE_PATTERN = r"^(cpu|auto|mps|cuda(:[0-9]{1,3})?)$"
"""What `--device` and a preset's `device` accept."""


def check_device(name: str) -> None:
    """Raise a UsageError when `name` is not a device this machine can run on."""
    if not re.match(DEVICE_PATTERN, name):
        raise UsageError(f"invalid device {name!r}: expected cpu, cuda, cuda:N, mps or auto")
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"device {name} requested but CUDA is not available")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UsageError(f"device {name} requested but this machine has {torch.cuda.device_count()}")
    if name == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise UsageError("device mps requested but MPS is not available")
