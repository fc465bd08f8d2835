"""Surfaces and sharpness on a model whose loss is a known quadratic, against closed forms:
L(θ + αδ + βη) expanded by hand, the Hessian A, and NumPy's eigvalsh."""

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from igm_cli.landscape.directions import make_directions
from igm_cli.landscape.sharpness import (
    flattest,
    hessian_vector_product,
    rise_within,
    sharpness_radius,
    top_hessian_eigenvalue,
)
from igm_cli.landscape.surface import Perturbation, evaluate_grid, grid_axes


class Quadratic(nn.Module):
    """L(W, b) = ½ (w − w*)ᵀ A (w − w*) + c with w = vec(W); the bias b is a 1-D parameter."""

    def __init__(self, A: np.ndarray, w_star: np.ndarray, c: float = 0.5, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.W = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(4, dtype=torch.float64))
        self.A, self.w_star, self.c = torch.from_numpy(A), torch.from_numpy(w_star), c

    def loss(self) -> torch.Tensor:
        u = self.W.flatten() - self.w_star
        return 0.5 * u @ self.A @ u + self.c + 0 * self.b.sum()

    def evaluate(self) -> tuple[float, float]:
        with torch.no_grad():
            return float(self.loss()), 0.0

    def loss_terms(self) -> Iterator[torch.Tensor]:
        yield self.loss()


def spd(n: int, eigenvalues: list[float], seed: int = 1) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return q @ np.diag(eigenvalues) @ q.T


def quadratic(eigenvalues=None) -> Quadratic:
    eigenvalues = eigenvalues or [9.0, 4.0, 2.5, 2.0, 1.5, 1.0, 0.8, 0.5, 0.3, 0.2, 0.1, 0.05]
    w_star = np.random.default_rng(2).normal(size=12)
    return Quadratic(spd(12, eigenvalues), w_star)


def test_the_2d_surface_equals_the_analytic_quadratic():
    model = quadratic()
    named = [("W", model.W), ("b", model.b)]
    d1, d2 = make_directions(named, seed=3, dims=2)
    assert torch.count_nonzero(d1[1]) == 0  # the bias is not moved
    axes = [grid_axes(7, 1.0)] * 2
    surface = {
        "loss": np.full((7, 7), np.nan),
        "accuracy": np.zeros((7, 7)),
        "done": np.zeros((7, 7), np.uint8),
    }
    w0 = model.W.detach().clone()
    evaluate_grid(model, Perturbation([model.W, model.b], [d1, d2]), axes, surface)
    # closed form: ½ (u + αδ + βη)ᵀ A (u + αδ + βη) + c
    A, u = model.A.numpy(), (w0.flatten() - model.w_star).numpy()
    delta, eta = d1[0].flatten().numpy(), d2[0].flatten().numpy()
    a, b = np.meshgrid(axes[0], axes[1], indexing="ij")
    v = u[None, None] + a[..., None] * delta + b[..., None] * eta  # (7, 7, 12)
    expected = 0.5 * np.einsum("abi,ij,abj->ab", v, A, v) + model.c
    np.testing.assert_allclose(surface["loss"], expected, rtol=1e-12)
    assert surface["done"].all()
    assert torch.equal(model.W, w0)  # restored


def test_the_1d_surface_and_a_resumed_grid():
    model = quadratic()
    (d,) = make_directions([("W", model.W)], seed=0, dims=1)
    axes = [grid_axes(9, 2.0)]
    surface = {"loss": np.full(9, np.nan), "accuracy": np.zeros(9), "done": np.zeros(9, np.uint8)}
    surface["done"][:4] = 1  # as if a first run had stopped after four points
    surface["loss"][:4] = -1.0
    evaluate_grid(model, Perturbation([model.W], [d]), axes, surface)
    A, u, dd = model.A.numpy(), (model.W.flatten() - model.w_star).detach().numpy(), d[0].flatten().numpy()
    expected = [0.5 * (u + t * dd) @ A @ (u + t * dd) + model.c for t in axes[0]]
    np.testing.assert_allclose(surface["loss"][4:], expected[4:], rtol=1e-12)
    assert (surface["loss"][:4] == -1.0).all()  # finished points are not evaluated again


def test_hessian_vector_product_is_A_times_v():
    model = quadratic()
    v = [torch.randn(4, 3, dtype=torch.float64)]
    (hv,) = hessian_vector_product(model, [model.W], v)
    np.testing.assert_allclose(hv.flatten().numpy(), model.A.numpy() @ v[0].flatten().numpy(), rtol=1e-12)


def test_power_iteration_finds_the_top_eigenvalue_of_a_known_quadratic():
    model = quadratic()
    expected = np.linalg.eigvalsh(model.A.numpy())[-1]
    result = top_hessian_eigenvalue(model, [model.W], iterations=500, tolerance=1e-10, seed=4)
    assert result["converged"]
    assert result["eigenvalue"] == pytest.approx(expected, rel=1e-6)
    # a different spectrum gives a different answer (the test could fail)
    other = quadratic([3.0, 2.0, *[0.5] * 10])
    assert top_hessian_eigenvalue(other, [other.W], iterations=500, tolerance=1e-10)["eigenvalue"] == (
        pytest.approx(3.0, rel=1e-6)
    )


def test_rise_within_r_on_a_paraboloid():
    axes = [grid_axes(5, 1.0)] * 2  # −1, −0.5, 0, 0.5, 1
    a, b = np.meshgrid(*axes, indexing="ij")
    loss = 2.0 + a**2 + 3 * b**2
    r = sharpness_radius(1.0, 5)
    assert r == 0.5  # 0.25·span is less than one grid step
    rise = rise_within(loss, axes, 2.0, r)  # the four neighbours: 0.25 (α) and 0.75 (β)
    assert rise == {"max_rise_within_r": 0.75, "mean_rise_within_r": 0.5}
    assert sharpness_radius(1.0, 25) == 0.25


def test_flattest_reports_both_measures_and_disagreement():
    rows = [
        {"name": "a", "max_rise_within_r": 0.1, "hessian_top_eigenvalue": 5.0},
        {"name": "b", "max_rise_within_r": 0.2, "hessian_top_eigenvalue": 1.0},
    ]
    verdict = flattest(rows)
    assert (verdict["by_rise"], verdict["by_hessian"], verdict["agree"]) == ("a", "b", False)
    assert "disagree" in verdict["verdict"]
    rows[1]["hessian_top_eigenvalue"] = 9.0
    assert flattest(rows)["agree"] and flattest(rows)["by_hessian"] == "a"
