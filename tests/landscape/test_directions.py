"""Filter-normalised directions (Li et al. 2018): per-filter norms, frozen 1-D parameters and
buffers, and identical seeded directions for checkpoints of one architecture."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from igm_cli.landscape.directions import cosine, filter_normalize, make_directions, raw_direction
from igm_cli.landscape.objective import scope_parameters
from igm_cli.landscape.runner import load_model
from igm_cli.landscape.surface import Perturbation


def unit_filters(d: torch.Tensor) -> torch.Tensor:
    flat = d.flatten(1)
    return flat / flat.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 3, 3), (6, 2, 5)])
def test_each_filter_of_the_direction_has_the_norm_of_the_weights_filter(shape):
    torch.manual_seed(0)
    weight = torch.randn(shape) * torch.linspace(0.1, 3.0, shape[0]).view(-1, *([1] * (len(shape) - 1)))
    raw = raw_direction(0, 0, "w", shape)
    d = filter_normalize(raw, weight)
    for i in range(shape[0]):
        assert d[i].norm().item() == pytest.approx(weight[i].norm().item(), rel=1e-5)
    # only rescaled: each filter still points where the Gaussian draw pointed
    torch.testing.assert_close(unit_filters(d), unit_filters(raw))


def test_one_dimensional_parameters_get_zero_directions():
    for weight in (torch.randn(7), nn.BatchNorm1d(7).weight, nn.Linear(3, 7).bias):
        assert torch.count_nonzero(filter_normalize(torch.randn(weight.shape), weight)) == 0


def test_raw_directions_depend_on_seed_index_name_and_shape_only():
    name = "branches.kar.head.0.weight"
    base = raw_direction(3, 0, name, (16, 8))
    assert torch.equal(base, raw_direction(3, 0, name, (16, 8)))
    for other in [(4, 0, name, (16, 8)), (3, 1, name, (16, 8)), (3, 0, "branches.fou.head.0.w", (16, 8))]:
        assert not torch.equal(base, raw_direction(*other))
    # the second direction is an independent draw: nearly orthogonal in high dimension
    big = [raw_direction(0, 0, "w", (300, 300))], [raw_direction(0, 1, "w", (300, 300))]
    assert abs(cosine(*big)) < 0.01


def test_directions_do_not_depend_on_pythons_hash_seed():
    code = (
        "from igm_cli.landscape.directions import raw_direction as r; "
        "print(float(r(5, 1, 'x.w', (9, 4)).sum()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": str(hash("x") % 1000 + 1)}  # not this process's seed
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == repr(float(raw_direction(5, 1, "x.w", (9, 4)).sum()))


def test_two_checkpoints_get_identical_directions_for_the_same_seed(tiny_runs):
    a = load_model(tiny_runs["a"], torch.device("cpu")).model
    b = load_model(tiny_runs["b"], torch.device("cpu")).model
    named_a, named_b = scope_parameters(a, "fused"), scope_parameters(b, "fused")
    assert [n for n, _ in named_a] == [n for n, _ in named_b]
    assert not torch.equal(named_a[0][1], named_b[0][1])  # different weights ...
    da = make_directions(named_a, seed=11, dims=2)
    db = make_directions(list(reversed(named_b)), seed=11, dims=2)  # ... in another order
    for k in range(2):
        for i, (name, _) in enumerate(named_a):
            j = len(named_b) - 1 - i
            # ... the same unit filters, each scaled to its own checkpoint's filter norm
            torch.testing.assert_close(unit_filters(da[k][i]), unit_filters(db[k][j]), msg=name)


def test_biases_batchnorm_and_buffers_are_not_moved(tiny_runs):
    model = load_model(tiny_runs["a"], torch.device("cpu")).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    named = scope_parameters(model, "fused")
    moved = {n for n, _ in named}
    assert moved and all(p.dim() >= 2 for _, p in named)
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.modules())  # there is something to keep
    with Perturbation([p for _, p in named], make_directions(named, seed=0, dims=2)) as perturbation:
        perturbation.set([0.7, -0.4])
        now = model.state_dict()
        for key, value in before.items():
            if key in moved:
                assert not torch.equal(now[key], value), key
            else:  # biases, BatchNorm weight/bias, running statistics
                assert torch.equal(now[key], value), key
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # restored bit for bit
