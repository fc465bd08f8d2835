"""Pure flat-projection math: Ȳ accumulation (Eq. 2), T (Eq. 4) and ∇W·T (Eq. 5).

Every expectation is computed independently in numpy float64 (T via the paper's SVD).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from igm_cli.engine.projection import batch_mean_outer, project_grad_, projection_matrix, trace_ratio

TAU = 0.4


def reference_T(cov: np.ndarray, tau: float) -> np.ndarray:
    """Eq. 4 as the paper writes it: svd(Ȳ) = U Λ Vᵀ, T = V exp(−τ(Λ − λmin)/(λmax − λmin)) Vᵀ."""
    cov = np.asarray(cov, dtype=np.float64)
    _, s, vt = np.linalg.svd((cov + cov.T) / 2)  # s descending
    sigma = np.exp(-tau * (s - s[-1]) / (s[0] - s[-1]))
    return vt.T @ np.diag(sigma) @ vt


def random_cov(seed: int, d: int = 6, batches: int = 20, batch: int = 8) -> np.ndarray:
    """Σ_t z̄_t z̄_tᵀ of random batches (a PSD matrix as Eq. 2 builds it)."""
    rng = np.random.default_rng(seed)
    cov = np.zeros((d, d))
    for _ in range(batches):
        z = rng.normal(loc=rng.normal(size=d), size=(batch, d))
        zbar = z.mean(0)
        cov += np.outer(zbar, zbar)
    return cov


def random_orthogonal(seed: int, d: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def eigvals(T: torch.Tensor) -> np.ndarray:
    return np.linalg.eigvalsh(T.numpy())


# ------------------------------------------------------------------ batch_mean_outer


@pytest.mark.parametrize("shape", [(8, 6), (4, 5, 6), (1, 3)])
def test_batch_mean_outer_is_outer_of_batch_mean(shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) + 0.5
    z = x.numpy().astype(np.float64).reshape(-1, shape[-1]).mean(0)
    out = batch_mean_outer(x)
    assert out.dtype == torch.float64
    assert out.shape == (shape[-1], shape[-1])
    np.testing.assert_allclose(out.numpy(), np.outer(z, z), rtol=1e-12, atol=1e-15)


def test_batch_mean_outer_detaches():
    x = torch.randn(4, 3, requires_grad=True)
    assert not batch_mean_outer(x).requires_grad


# ------------------------------------------------------------------ projection_matrix


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_matrix_equals_numpy_svd_reference(seed):
    cov = random_cov(seed)
    T = projection_matrix(torch.from_numpy(cov), TAU)
    assert T.dtype == torch.float64
    np.testing.assert_allclose(T.numpy(), reference_T(cov, TAU), rtol=0, atol=1e-12)


def test_projection_matrix_of_rank_deficient_cov_equals_reference():
    # 3 batches in 6 dimensions: rank 3, λmin = 0 up to rounding (the usual case for few batches).
    cov = random_cov(3, d=6, batches=3)
    T = projection_matrix(torch.from_numpy(cov), TAU)
    np.testing.assert_allclose(T.numpy(), reference_T(cov, TAU), rtol=0, atol=1e-10)


def test_projection_matrix_accepts_float32_and_returns_float64():
    cov = random_cov(4)
    T = projection_matrix(torch.from_numpy(cov).float(), TAU)
    assert T.dtype == torch.float64
    np.testing.assert_allclose(T.numpy(), reference_T(cov.astype(np.float32), TAU), atol=1e-6)


def test_projection_matrix_is_symmetric():
    T = projection_matrix(torch.from_numpy(random_cov(5)), TAU)
    torch.testing.assert_close(T, T.T, rtol=0, atol=1e-15)


@pytest.mark.parametrize("tau", [0.01, 0.4, 3.0, 10.0])
def test_projection_matrix_eigenvalues_span_exp_minus_tau_to_one(tau):
    T = projection_matrix(torch.from_numpy(random_cov(6)), tau)
    ev = eigvals(T)
    assert ev.min() >= math.exp(-tau) - 1e-12
    assert ev.max() <= 1 + 1e-12
    # both ends are attained: λmax maps to e^−τ, λmin to 1
    assert ev.min() == pytest.approx(math.exp(-tau), abs=1e-12)
    assert ev.max() == pytest.approx(1.0, abs=1e-12)


def test_projection_matrix_small_tau_gives_identity():
    T = projection_matrix(torch.from_numpy(random_cov(7)), 1e-9)
    np.testing.assert_allclose(T.numpy(), np.eye(6), rtol=0, atol=1e-8)


@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_projection_matrix_is_invariant_to_scaling_the_covariance(c):
    cov = torch.from_numpy(random_cov(8))
    torch.testing.assert_close(
        projection_matrix(c * cov, TAU), projection_matrix(cov, TAU), rtol=0, atol=1e-10
    )


@pytest.mark.parametrize(
    "cov",
    [torch.zeros(5, 5), torch.eye(5), 3.7 * torch.eye(5, dtype=torch.float64), 1e-8 * torch.eye(5)],
    ids=["zero", "identity", "3.7I", "1e-8I"],
)
def test_projection_matrix_of_flat_spectrum_is_exactly_identity(cov):
    T = projection_matrix(cov, TAU)
    assert torch.equal(T, torch.eye(5, dtype=torch.float64))


def test_projection_matrix_of_rotated_multiple_of_identity_is_identity():
    # Q (cI) Qᵀ is cI up to rounding; the tiny spread must not turn into a full e^−τ range.
    q = random_orthogonal(9, 5)
    cov = q @ (2.5 * np.eye(5)) @ q.T
    T = projection_matrix(torch.from_numpy(cov), TAU)
    np.testing.assert_allclose(T.numpy(), np.eye(5), rtol=0, atol=1e-12)


def test_projection_matrix_with_tiny_negative_rounding_eigenvalues_stays_in_range():
    q = random_orthogonal(10, 6)
    lam = np.array([-1e-13, -1e-15, 0.0, 0.2, 1.0, 2.0])
    cov = q @ np.diag(lam) @ q.T
    T = projection_matrix(torch.from_numpy(cov), TAU)
    ev = eigvals(T)
    assert np.isfinite(ev).all()
    assert ev.min() >= math.exp(-TAU) - 1e-12
    assert ev.max() <= 1 + 1e-12


def test_projection_matrix_clamps_negative_eigenvalues_to_zero():
    # λ = (−1, 0, 1, 2): clamped to (0, 0, 1, 2) → σ = (1, 1, e^−τ/2, e^−τ); without the clamp
    # the −1 would become λmin and shift every σ.
    q = random_orthogonal(11, 4)
    cov = q @ np.diag([-1.0, 0.0, 1.0, 2.0]) @ q.T
    sigma = np.exp(-TAU * np.array([0.0, 0.0, 1.0, 2.0]) / 2.0)
    expected = q @ np.diag(sigma) @ q.T
    T = projection_matrix(torch.from_numpy(cov), TAU)
    np.testing.assert_allclose(T.numpy(), expected, rtol=0, atol=1e-12)


def test_projection_matrix_damps_the_dominant_direction_most():
    # Ȳ = diag(1, 10): the high-variance (sharp) axis gets e^−τ, the other 1 (Eq. 3–4).
    T = projection_matrix(torch.diag(torch.tensor([1.0, 10.0], dtype=torch.float64)), TAU)
    np.testing.assert_allclose(T.numpy(), np.diag([1.0, math.exp(-TAU)]), rtol=0, atol=1e-14)


# ------------------------------------------------------------------ project_grad_ and trace_ratio


def test_project_grad_right_multiplies_weight_grad_and_leaves_bias():
    torch.manual_seed(0)
    linear = nn.Linear(6, 4).double()
    linear.weight.grad = torch.randn(4, 6, dtype=torch.float64)
    linear.bias.grad = torch.randn(4, dtype=torch.float64)
    g_w, g_b = linear.weight.grad.clone(), linear.bias.grad.clone()
    T = torch.from_numpy(reference_T(random_cov(12), TAU))
    project_grad_(linear.weight, T)
    np.testing.assert_allclose(linear.weight.grad.numpy(), g_w.numpy() @ T.numpy(), rtol=1e-12, atol=1e-14)
    assert torch.equal(linear.bias.grad, g_b)


def test_project_grad_acts_on_the_input_side_of_a_square_weight():
    # (out, in) storage: the paper's T∇W is ∇W @ T; T @ ∇W would also type-check when out = in.
    torch.manual_seed(1)
    linear = nn.Linear(5, 5).double()
    linear.weight.grad = torch.randn(5, 5, dtype=torch.float64)
    g_w = linear.weight.grad.numpy().copy()
    T = reference_T(random_cov(14, d=5), TAU)
    project_grad_(linear.weight, torch.from_numpy(T))
    np.testing.assert_allclose(linear.weight.grad.numpy(), g_w @ T, rtol=1e-12, atol=1e-14)
    assert not np.allclose(linear.weight.grad.numpy(), T @ g_w)


def test_trace_ratio_is_trace_over_dimension():
    T = projection_matrix(torch.from_numpy(random_cov(13)), TAU)
    assert trace_ratio(T) == pytest.approx(np.trace(T.numpy()) / 6, rel=1e-12)
    assert math.exp(-TAU) <= trace_ratio(T) <= 1
    assert trace_ratio(torch.eye(4, dtype=torch.float64)) == 1.0
