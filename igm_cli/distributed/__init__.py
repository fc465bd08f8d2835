"""Training on several processes with torchrun and torch DDP (DESIGN §5); no-ops on one process."""

from .ddp import DataParallel, SingleProcess
from .world import World, launched_by_torchrun

__all__ = ["DataParallel", "SingleProcess", "World", "launched_by_torchrun"]
