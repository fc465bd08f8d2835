"""Data-parallel training steps: the seeded batch split across ranks, DDP per stage, SAM's passes.

The global batch stays `data.batch_size` and is divided across ranks (`tensor_split` of
the batch's indices in the seeded epoch order, so ranks never overlap). Each rank's
gradient is scaled by n_rank·N/n_batch at the loss modules' outputs, so DDP's average
over N ranks is the mean over the global batch, also for an uneven last batch.

Per stage only the active branches are wrapped in DistributedDataParallel (re-wrapped
at stage boundaries, so DDP never sees a branch that gets no gradient); methods reach the
wrapper through `model.branch(m)` while a step runs. SAM's first pass runs under
`no_sync()` (forward and backward); `sam.ddp: global` then all-reduces that gradient
before ε, `local` perturbs each rank with its own. Methods with two backward passes per
graph (DGL) or several steps per batch through a shared head (MLA) are not wrapped: igm
all-reduces their gradients itself after their backward passes (`Method.ddp_wrap`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .world import World

if TYPE_CHECKING:
    from igm_cli.engine.batches import SplitBatches
    from igm_cli.engine.stages import Stage
    from igm_cli.engine.train_state import TrainState
    from igm_cli.methods.base import Method, Substep


# torch ≥ 2.13 renames broadcast_buffers (deprecated) to forward_sync_buffers
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


def rank_seed(seed: int, rank: int, step: int) -> int:
    """The RNG seed of one rank's step: a function of (seed, rank, step) only."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729 + 1) % 2**63


class SingleProcess:
    """The one-process behaviour of every verb the Trainer calls (no communication)."""

    world = World.single()
    share = 1.0  # this rank's share of the current global batch

    def iterate(
        self, batches: SplitBatches, batch_size: int, order: torch.Tensor, state: TrainState
    ) -> Iterator:
        """This rank's part of each global batch from `state.batch` on."""
        return batches.iterate(batch_size, order, state.batch)

    def whole_batches(self, batches: SplitBatches, batch_size: int, order: torch.Tensor) -> Iterator:
        """Whole global batches owned by this rank (the covariance pass needs whole-batch means)."""
        return batches.iterate(batch_size, order)

    def activate(self, model: nn.Module, method: Method, stage: Stage) -> None:
        """Prepare the stage's modules for data-parallel steps."""

    def gradients(self, substep: Substep, inputs, labels, second_pass: bool, sam: bool) -> torch.Tensor:
        """The substep's gradients, reduced over ranks as the step needs them."""
        return substep.gradients(inputs, labels, second_pass)

    def sum_(self, value: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (the training loss of an epoch)."""
        return value

    def any(self, flag: bool, device: torch.device) -> bool:
        """True everywhere when True on one rank (stop at the same step boundary)."""
        return flag


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by `scale` (this rank's loss weight)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


class DataParallel(SingleProcess):
    """N ranks: split batches, DDP over the active branches (or all-reduced gradients), SAM modes."""

    def __init__(self, world: World, seed: int, sam_mode: str = "global"):
        self.world, self.seed, self.sam_mode = world, seed, sam_mode
        self.share, self._scale = 1.0 / world.size, 1.0
        self._wrapped: dict[str, DistributedDataParallel] = {}
        self._key: tuple | None = None
        self._ddp_wrap = True
        self._hooks: list = []
        self._model: nn.Module | None = None

    # ------------------------------------------------------------ data

    def iterate(self, batches, batch_size, order, state):
        """Rank r takes the r-th of N near-equal contiguous parts of every global batch.

        The RNG (augmentation, dropout) is re-seeded from (seed, rank, step) before each
        batch, so a resumed run draws what the uninterrupted one drew.
        """
        for b in range(state.batch, batches.num_batches(batch_size)):
            index = order[b * batch_size : (b + 1) * batch_size]
            part = index.tensor_split(self.world.size)[self.world.rank]
            self.share = len(part) / len(index)
            self._scale = self.share * self.world.size  # DDP divides by N: the sum is the global mean
            torch.manual_seed(rank_seed(self.seed, self.world.rank, state.step))
            yield batches.take(part)

    def whole_batches(self, batches, batch_size, order):
        """Global batches b with b mod N = rank."""
        for b in range(self.world.rank, batches.num_batches(batch_size), self.world.size):
            yield batches.take(order[b * batch_size : (b + 1) * batch_size])

    # ------------------------------------------------------------ modules

    def activate(self, model, method, stage) -> None:
        """Wrap the stage's loss modules in DDP (once per stage) and scale their output gradients."""
        modules = method.loss_modules(model, stage)
        key = (stage.index, tuple(id(m) for m in modules))
        if key == self._key:
            return
        self._release()
        self._key, self._model, self._ddp_wrap = key, model, method.ddp_wrap
        for module in modules:
            self._hooks.append(module.register_forward_hook(self._scale_output))
        if method.ddp_wrap:  # DDP broadcasts rank 0's state here: every rank starts the stage equal
            self._wrapped = {m: self._ddp(model.branch(m)) for m in stage.active}
        else:
            self._broadcast_parameters(model)

    def _ddp(self, module: nn.Module) -> DistributedDataParallel:
        device = next(module.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        # buffers: GlobalBatchNorm keeps running statistics equal on every rank without a broadcast
        return DistributedDataParallel(module, device_ids=ids, **_NO_BUFFER_SYNC)

    def _scale_output(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or self._scale == 1.0:
            return output
        return _ScaleGrad.apply(output, self._scale)

    @torch.no_grad()
    def _broadcast_parameters(self, model: nn.Module) -> None:
        for tensor in [*model.parameters(), *model.buffers()]:
            self.world.broadcast_(tensor.data)

    def _release(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks, self._wrapped = [], {}

    @contextmanager
    def _routed(self) -> Iterator[None]:
        """`model.branch(m)` returns the DDP wrapper of m while a step runs."""
        routes = self._model.__dict__.setdefault("branch_routes", {})
        routes.update(self._wrapped)
        try:
            yield
        finally:
            routes.clear()

    # ------------------------------------------------------------ steps

    def gradients(self, substep, inputs, labels, second_pass, sam):
        """DDP reduces a plain pass and SAM's second; SAM's first is local (no_sync), then maybe reduced."""
        first_of_two = sam and not second_pass
        with ExitStack() as stack:
            stack.enter_context(self._routed())
            if first_of_two:
                for wrapper in self._wrapped.values():
                    stack.enter_context(wrapper.no_sync())
            loss = substep.gradients(inputs, labels, second_pass)
        reduce = (first_of_two and self.sam_mode == "global") or (not first_of_two and not self._ddp_wrap)
        if reduce:
            self.all_reduce_grads(substep.params)
        return loss

    @torch.no_grad()
    def all_reduce_grads(self, params: list[nn.Parameter]) -> None:
        """Every gradient ← (1/N) Σ_ranks gradient, in one collective."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.world.all_reduce_(flat).div_(self.world.size)
        for g, reduced in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(reduced.view_as(g))

    def sum_(self, value):
        """Σ over ranks in place."""
        return self.world.all_reduce_(value)

    def any(self, flag, device):
        """One MAX all-reduce of the flag."""
        return self.world.any(flag, device)
