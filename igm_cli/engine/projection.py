"""Flat projection as pure functions: covariance accumulation (Eq. 2), T (Eq. 4), ∇W·T (Eq. 5).

torch stores a Linear weight as (out, in); the paper's T ∇W acts on the input side, so
here it is `W.grad @ T` with T of size (in, in). A convolution is a Linear on its input
patches: its weight (out, in, kh, kw) acts as (out, in·kh·kw) on unfolded patches, so its
covariance is over patches and its gradient is right-multiplied in that shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Spectra flatter than this (relative to λmax) give T = I: the paper's formula divides by
# λmax − λmin, and the released code does so without a guard.
DEGENERATE_SPREAD = 1e-12


def batch_mean_outer(x: torch.Tensor) -> torch.Tensor:
    """Y_t = z̄ z̄ᵀ of one batch (Eq. 2), in float64; x is (B, ..., d)."""
    z = x.detach().reshape(-1, x.shape[-1]).to(torch.float64).mean(0)  # (d,)
    return torch.outer(z, z)


def batch_mean_patch_outer(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Σ_l p_l p_lᵀ over the patches of the batch-mean input map, float64 (in·kh·kw)².

    What the released code accumulates for a Conv2d (released-code.md §3.2): the batch
    mean (1, C, H, W) unfolded with the layer's kernel, dilation, padding and stride into
    P (L, C·kh·kw), then PᵀP. Unfolding is linear, so this is also Σ_l p̄_l p̄_lᵀ of the
    batch-mean patches. x is (B, C, H, W).
    """
    mean = x.detach().to(torch.float64).mean(0, keepdim=True)  # (1, C, H, W)
    P = F.unfold(mean, conv.kernel_size, conv.dilation, conv.padding, conv.stride)[0]  # (C·kh·kw, L)
    return P @ P.T


def layer_covariance(layer: nn.Module, x: torch.Tensor, centred: bool = False) -> torch.Tensor:
    """One batch's term of Ȳ at a GM layer's input (Eq. 2): z̄ z̄ᵀ, or patches for a Conv2d."""
    if isinstance(layer, nn.Conv2d):
        return batch_mean_patch_outer(x, layer)
    return batch_covariance(x) if centred else batch_mean_outer(x)


def batch_covariance(x: torch.Tensor) -> torch.Tensor:
    """(1/B) Σ_i (z_i − z̄)(z_i − z̄)ᵀ of one batch in float64 (MIE's centred option); x is (B, ..., d)."""
    z = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
    centred = z - z.mean(0)
    return centred.T @ centred / z.shape[0]


def projection_matrix(cov: torch.Tensor, tau: float, guards: bool = True) -> torch.Tensor:
    """T = V exp(−τ (Λ − λmin I)/(λmax − λmin)) Vᵀ of a PSD matrix (Eq. 4), float64.

    Eigenvalues are clamped ≥ 0 and a (numerically) flat spectrum gives the identity.
    `guards=False` is the released code (`recipe: reference`): its `torch.svd` of the symmetric
    R gives |λ| and the eigenvectors, so |λ| here; λmax = λmin gives 0/0 = NaN, as there.
    """
    cov64 = cov.detach().to(torch.float64)
    cov64 = (cov64 + cov64.T) / 2
    eigenvalues, V = torch.linalg.eigh(cov64)  # ascending; V (d, d)
    if not guards:
        eigenvalues = eigenvalues.abs()  # singular values of a symmetric matrix
        lam_min, lam_max = eigenvalues.min(), eigenvalues.max()
        T = (V * torch.exp(-tau * (eigenvalues - lam_min) / (lam_max - lam_min))) @ V.T
        return (T + T.T) / 2
    eigenvalues = eigenvalues.clamp_min(0)
    lam_min, lam_max = eigenvalues[0], eigenvalues[-1]
    spread = lam_max - lam_min
    if not torch.isfinite(spread) or spread <= DEGENERATE_SPREAD * lam_max or lam_max == 0:
        return torch.eye(cov64.shape[0], dtype=torch.float64, device=cov64.device)
    sigma = torch.exp(-tau * (eigenvalues - lam_min) / spread)  # in [e^−τ, 1]
    T = (V * sigma) @ V.T
    return (T + T.T) / 2


def project_grad_(weight: torch.nn.Parameter, T: torch.Tensor) -> None:
    """W.grad ← W.grad @ T (Eq. 5/9), a conv's as (out, in·kh·kw); the bias is never touched."""
    grad = weight.grad
    weight.grad = (grad.reshape(grad.shape[0], -1) @ T).reshape(grad.shape)


def working_copy(T: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """T in the weight's dtype and device, with entries below that dtype's smallest normal set to 0.

    Zero-padded patches leave many off-diagonal entries of a conv T around 1e-40; cast to
    float32 they become subnormal, which makes CPU matmuls with T ~10× slower (measured on a
    layer4 T: 4.1 s instead of 0.4 s). Zeroing them changes T by less than 1.2e-38.
    """
    T = T.to(weight.device)
    tiny = torch.finfo(weight.dtype).tiny
    return torch.where(T.abs() < tiny, torch.zeros((), dtype=T.dtype, device=T.device), T).to(weight.dtype)


def trace_ratio(T: torch.Tensor) -> float:
    """trace(T)/d: 1 means T = I (no effect), e^−τ the strongest possible damping."""
    return float(torch.trace(T) / T.shape[0])
