"""SamStep and frozen_bn_stats (Eq. 6–8), checked against a functional two-pass reference.

The reference computes g at θ and at θ + ε with torch.func.functional_call on explicitly
built parameter dicts (and cloned buffers), so it shares no state with the module under
test; ε = ρ g/‖g‖ uses one norm over the concatenation of every parameter's gradient.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from igm_cli.engine.sam import SamStep, frozen_bn_stats
from igm_cli.engine.trainer import Trainer, TrainerConfig
from igm_cli.methods.igm import Igm
from igm_cli.models import build_model
from igm_cli.presets import Preset

RHO = 0.05
LR = 0.1


def tiny_model(dtype=torch.float64, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).to(dtype).train()


def tiny_batch(dtype=torch.float64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 4, generator=g, dtype=dtype) * 2 + 0.5, torch.randint(0, 3, (16,), generator=g)


def functional_grads(
    module: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and ∇L at `params` (train-mode BN on batch statistics; module buffers untouched)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    buffers = {k: v.detach().clone() for k, v in module.named_buffers()}
    loss = F.cross_entropy(functional_call(module, (leaves, buffers), (x,)), y)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return float(loss.detach()), dict(zip(leaves, grads, strict=True))


def global_norm(grads: dict[str, torch.Tensor]) -> float:
    return float(np.linalg.norm(np.concatenate([g.detach().numpy().ravel() for g in grads.values()])))


def reference_sam_grads(module: nn.Module, x, y, rho: float) -> tuple[dict, dict, dict]:
    """θ, g(θ) and g(θ + ρ g/‖g‖) of the module's current parameters."""
    theta = {k: v.detach().clone() for k, v in module.named_parameters()}
    _, g = functional_grads(module, theta, x, y)
    norm = global_norm(g)
    perturbed = {k: theta[k] + rho * g[k] / norm for k in theta}
    _, g2 = functional_grads(module, perturbed, x, y)
    return theta, g, g2


def sam_step(model: nn.Module, sam: SamStep, optimizer, x, y) -> None:
    """The trainer's order: backward → perturb → second backward (frozen BN) → restore → step."""
    params = list(model.parameters())
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    sam.perturb(params)
    optimizer.zero_grad(set_to_none=True)
    with frozen_bn_stats(model):
        F.cross_entropy(model(x), y).backward()
    sam.restore()
    optimizer.step()


def bn_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.named_buffers()}


# ------------------------------------------------------------------ SamStep


def test_enabled_only_for_positive_rho():
    assert SamStep(0.0).enabled is False
    assert SamStep(RHO).enabled is True


def test_perturb_moves_to_theta_plus_rho_g_over_one_global_norm():
    model = tiny_model()
    x, y = tiny_batch()
    F.cross_entropy(model(x), y).backward()
    theta = {k: p.detach().clone() for k, p in model.named_parameters()}
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    norm = global_norm(grads)

    returned = SamStep(RHO).perturb(list(model.parameters()))

    assert float(returned) == pytest.approx(norm, rel=1e-12)
    eps = {}
    for k, p in model.named_parameters():
        eps[k] = p.detach() - theta[k]
        torch.testing.assert_close(eps[k], RHO * grads[k] / norm, rtol=1e-9, atol=1e-15)
    assert global_norm(eps) == pytest.approx(RHO, rel=1e-9)  # ‖ε‖ = ρ overall, not per tensor


def test_perturb_then_restore_is_bit_exact():
    model = tiny_model(torch.float32)
    x, y = tiny_batch(torch.float32)
    F.cross_entropy(model(x), y).backward()
    saved = [p.detach().clone() for p in model.parameters()]
    sam = SamStep(0.7)
    sam.perturb(list(model.parameters()))
    assert not all(torch.equal(p, s) for p, s in zip(model.parameters(), saved, strict=True))
    sam.restore()
    for p, s in zip(model.parameters(), saved, strict=True):
        assert torch.equal(p, s)


def test_perturb_ignores_params_without_grad():
    model = tiny_model()
    x, y = tiny_batch()
    F.cross_entropy(model(x), y).backward()
    frozen = model[0].bias
    frozen.grad = None
    before = frozen.detach().clone()
    others = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    sam = SamStep(RHO)
    norm = sam.perturb(list(model.parameters()))
    assert float(norm) == pytest.approx(global_norm(others), rel=1e-12)
    assert torch.equal(frozen, before)
    sam.restore()
    assert torch.equal(frozen, before)


def test_restore_pending_is_a_noop_without_perturb_and_restores_after():
    model = tiny_model()
    x, y = tiny_batch()
    saved = [p.detach().clone() for p in model.parameters()]
    sam = SamStep(RHO)
    sam.restore_pending()  # nothing pending
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), saved, strict=True))

    F.cross_entropy(model(x), y).backward()
    sam.perturb(list(model.parameters()))
    sam.restore_pending()
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), saved, strict=True))

    with torch.no_grad():  # a later change must not be undone by a second call
        model[0].weight.add_(1.0)
    moved = model[0].weight.detach().clone()
    sam.restore_pending()
    assert torch.equal(model[0].weight, moved)


def test_sam_step_equals_functional_two_pass_reference():
    model = tiny_model()
    x, y = tiny_batch()
    theta, _, g2 = reference_sam_grads(model, x, y, RHO)
    sam_step(model, SamStep(RHO), torch.optim.SGD(model.parameters(), lr=LR), x, y)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), theta[k] - LR * g2[k], rtol=1e-10, atol=1e-12, msg=k)


def test_sam_step_differs_from_a_plain_step():
    # guards the test above: g(θ + ε) must be measurably different from g(θ) here
    model = tiny_model()
    x, y = tiny_batch()
    theta, g, g2 = reference_sam_grads(model, x, y, RHO)
    assert max(float((g[k] - g2[k]).abs().max()) for k in g) > 1e-4
    sam_step(model, SamStep(RHO), torch.optim.SGD(model.parameters(), lr=LR), x, y)
    assert not all(torch.allclose(p.detach(), theta[k] - LR * g[k]) for k, p in model.named_parameters())


def test_sam_step_bn_running_stats_equal_first_pass_only():
    model = tiny_model()
    x, y = tiny_batch()
    first_only = copy.deepcopy(model)
    first_only(x)  # train mode: one update of the running statistics
    twice = copy.deepcopy(model)
    twice(x)
    twice(x)
    assert not torch.equal(bn_state(twice)["1.running_mean"], bn_state(first_only)["1.running_mean"])

    sam_step(model, SamStep(RHO), torch.optim.SGD(model.parameters(), lr=LR), x, y)
    expected = bn_state(first_only)
    assert set(bn_state(model)) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    for k, v in bn_state(model).items():
        assert torch.equal(v, expected[k]), k


# ------------------------------------------------------------------ frozen_bn_stats


def test_frozen_bn_stats_restores_track_running_stats_flags():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.BatchNorm1d(4, track_running_stats=False))
    with frozen_bn_stats(model):
        assert [model[1].track_running_stats, model[2].track_running_stats] == [False, False]
    assert [model[1].track_running_stats, model[2].track_running_stats] == [True, False]
    with pytest.raises(RuntimeError), frozen_bn_stats(model):
        raise RuntimeError("interrupted second pass")
    assert [model[1].track_running_stats, model[2].track_running_stats] == [True, False]


def test_frozen_bn_stats_uses_batch_stats_in_train_and_running_stats_in_eval():
    model = tiny_model()
    x, _ = tiny_batch()
    model(x * 3 + 1)  # running statistics away from the batch's
    before = bn_state(model)

    train_reference = copy.deepcopy(model)
    eval_reference = copy.deepcopy(model).eval()
    with frozen_bn_stats(model):
        train_out = model(x)
    assert torch.equal(train_out, train_reference(x))  # normal train-mode output: batch statistics
    for k, v in bn_state(model).items():
        assert torch.equal(v, before[k]), k

    model.eval()
    with frozen_bn_stats(model):
        eval_out = model(x)
    assert torch.equal(eval_out, eval_reference(x))  # eval branches keep using running statistics
    assert not torch.allclose(eval_out, train_out)


# ------------------------------------------------------------------ the trainer's step


def random_T(seed: int, d: int, tau: float = 0.4) -> torch.Tensor:
    """A symmetric T with eigenvalues in [e^−τ, 1], as Eq. 4 produces."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    sigma = np.exp(-tau * rng.uniform(size=d))
    return torch.from_numpy(q @ np.diag(sigma) @ q.T)


@pytest.mark.parametrize("rho", [0.0, RHO])
def test_trainer_step_is_sam_gradient_then_projection_then_sgd(rho):
    preset = Preset.model_validate(
        {
            "modalities": [
                {"name": n, "encoder": {"name": "mlp", "hidden": [8], "dim": 6}} for n in ("a", "b")
            ],
            "head": {"widths": [5, 4]},
        }
    )
    torch.manual_seed(0)
    model = build_model(preset, {"a": [10], "b": [10]}, 3).double()
    Ts = {"head.0": random_T(1, 6), "head.2": random_T(2, 5), "head.3": random_T(3, 4)}
    method = Igm(preset)
    method.load_state_tensors({f"gm.T.a.{k}": T for k, T in Ts.items()})
    stage = method.schedule()[1]
    assert stage.active == ("b",) and stage.source == "a"
    config = TrainerConfig(batch_size=16, eval_batch_size=16, fusion="mean", selection="macro_f1", seed=0)
    # _step reads only the model, SamStep, method and config: the rest is never touched
    unused = {"make_optimizer": None, "lr_at": None, "train": None, "val": None, "sink": None}
    trainer = Trainer(model, method, sam=SamStep(rho), config=config, **unused)
    params = trainer._activate(stage)
    assert sorted(method.begin_stage(model, stage, None)) == sorted(Ts)
    (substep,) = method.substeps(model, stage, params)

    g = torch.Generator().manual_seed(5)
    inputs = {m: torch.randn(16, 10, generator=g, dtype=torch.float64) + 1 for m in ("a", "b")}
    labels = torch.randint(0, 3, (16,), generator=g)

    branch = model.branch("b")
    loss0, _ = functional_grads(branch, dict(branch.named_parameters()), inputs["b"], labels)
    theta, _, g2 = reference_sam_grads(branch, inputs["b"], labels, rho)  # ρ = 0: g2 = g(θ)
    # ∇W ← ∇W T on the head weights (Eq. 9), on the gradient of the second pass
    update = dict(g2)
    for k in g2:
        layer, _, kind = k.rpartition(".")
        if kind == "weight" and layer in Ts:
            update[k] = g2[k] @ Ts[layer]
    assert sum(not torch.equal(update[k], g2[k]) for k in g2) == 3
    first_only = copy.deepcopy(branch)
    first_only(inputs["b"])
    other = {k: v.clone() for k, v in model.branch("a").state_dict().items()}

    loss = trainer._step(substep, torch.optim.SGD(params, lr=LR), inputs, labels)

    assert float(loss) == pytest.approx(loss0, rel=1e-12)  # the loss at θ, not at θ + ε
    for k, p in branch.named_parameters():
        torch.testing.assert_close(p.detach(), theta[k] - LR * update[k], rtol=1e-10, atol=1e-12, msg=k)
    for k, v in bn_state(branch).items():
        assert torch.equal(v, bn_state(first_only)[k]), k
    for k, v in model.branch("a").state_dict().items():
        assert torch.equal(v, other[k]), k
