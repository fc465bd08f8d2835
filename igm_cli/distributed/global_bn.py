"""BatchNorm over the global batch: per-rank sums all-reduced, so N ranks normalise like one.

torch's SyncBatchNorm refuses CPU tensors (gloo); this one works on any device. In training
mode the batch mean and variance are those of the whole global batch (sums in float64,
one all-reduce forward and one backward), so a 2-process run of a BatchNorm model equals
the single-process run with the same global batch. Eval mode uses the running statistics,
which are updated from the global statistics and so stay identical on every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """y = Σ_ranks x on every rank; the gradient of every rank's x is Σ_ranks ∂J/∂y."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm{1,2,3}d whose training statistics are those of the global batch."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global statistics in training mode (or without running statistics), else running ones."""
        self._check_input_dim(x)
        batch_stats = self.training or self.running_mean is None
        if not batch_stats or not (dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        channels = x.shape[1]
        count = torch.full((1,), x.numel() // max(channels, 1), dtype=torch.float64, device=x.device)
        local = torch.cat([x.sum(dims, dtype=torch.float64), (x * x).sum(dims, dtype=torch.float64), count])
        total = _AllReduceSum.apply(local)  # (2C + 1,)
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels : 2 * channels] / n - mean * mean).clamp_min(0)
        if self.training and self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), float(n.detach()))
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x - mean.to(x.dtype).view(shape)) * torch.rsqrt(var.to(x.dtype).view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        """As _BatchNorm: momentum (or a cumulative average when None), unbiased variance."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        unbiased = var * (n / (n - 1)) if n > 1 else var
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def to_global_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm below `module` by a GlobalBatchNorm with the same state.

    The state_dict keys stay the same, so checkpoints load into single-process models.
    """
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        bn = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats)  # fmt: skip
        bn.to(next(iter(module.state_dict().values()), torch.empty(0)).device)
        bn.load_state_dict(module.state_dict())
        bn.train(module.training)
        return bn
    for name, child in module.named_children():
        replaced = to_global_batch_norm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


__all__ = ["GlobalBatchNorm", "to_global_batch_norm"]
