"""FlatProjector: Ȳ collected at the head Linears' inputs, T paired backwards, ∇W ← ∇W T (Eq. 2–5, 9).

T is recomputed here from the head inputs (encoder and head submodules run by hand,
batch-mean outer products accumulated in numpy, the paper's SVD), never read back from
the projector under test.
"""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from igm_cli.engine.flat_projector import FlatProjector
from igm_cli.engine.stages import StageSchedule, previous_modality
from igm_cli.models import Branch, LateFusionModel, build_head, build_model
from igm_cli.presets import Preset

TAU = 0.4
IN = 10  # raw input size of every modality
C = 3  # classes


# ------------------------------------------------------------------ references and builders


def reference_T(cov: np.ndarray, tau: float = TAU) -> np.ndarray:
    """Eq. 4 via the paper's SVD, float64."""
    _, s, vt = np.linalg.svd((cov + cov.T) / 2)
    sigma = np.exp(-tau * (s - s[-1]) / (s[0] - s[-1]))
    return vt.T @ np.diag(sigma) @ vt


def head_inputs(branch: Branch, x: torch.Tensor) -> list[np.ndarray]:
    """Input of every head Linear, in forward order, on a copy of the branch in eval mode."""
    branch = copy.deepcopy(branch).eval()
    with torch.no_grad():
        h = branch.encoder(x)
        inputs = []
        for module in branch.head:
            if isinstance(module, nn.Linear):
                inputs.append(h.double().numpy())
            h = module(h)
    return inputs


def reference_Ts(branch: Branch, batches: list[torch.Tensor]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(Ȳ, T) per head Linear: Ȳ = Σ_t z̄_t z̄_tᵀ over the batches (Eq. 2), T by Eq. 4."""
    covs = None
    for x in batches:
        ys = [np.outer(z.mean(0), z.mean(0)) for z in head_inputs(branch, x)]
        covs = ys if covs is None else [c + y for c, y in zip(covs, ys, strict=True)]
    return covs, [reference_T(c) for c in covs]


def make_preset(names=("a", "b"), dims=None, widths=(5, 4), epochs=None) -> Preset:
    dims = dims or [6] * len(names)
    raw = {
        "modalities": [
            {"name": n, "encoder": {"name": "mlp", "hidden": [8], "dim": d}}
            for n, d in zip(names, dims, strict=True)
        ],
        "head": {"widths": list(widths)},
    }
    if epochs is not None:
        raw["stages"] = {"epochs": list(epochs)}
    return Preset.model_validate(raw)


def make_model(preset: Preset, seed: int = 0, dtype=torch.float64) -> LateFusionModel:
    torch.manual_seed(seed)
    model = build_model(preset, {m: [IN] for m in preset.modality_names}, C).to(dtype)
    warm_up_bn(model, dtype)
    return model


def warm_up_bn(model: nn.Module, dtype) -> None:
    """A few train-mode passes so BN running statistics differ from batch statistics."""
    g = torch.Generator().manual_seed(99)
    model.train()
    with torch.no_grad():
        for branch in model.branches.values():
            first = next(m for m in branch.encoder.modules() if isinstance(m, nn.Linear))
            for _ in range(3):
                branch(torch.randn(16, first.in_features, generator=g, dtype=dtype) * 2 + 1)


def make_batches(seed: int, n: int = 5, batch: int = 8, size: int = IN, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shift = torch.randn(size, generator=g, dtype=dtype)
    return [torch.randn(batch, size, generator=g, dtype=dtype) + shift for _ in range(n)]


def fill_grads(model: LateFusionModel, seed: int = 0) -> dict[str, torch.Tensor]:
    """Backward of the sum of every branch's CE so every parameter has a gradient; returns copies."""
    g = torch.Generator().manual_seed(seed)
    model.zero_grad(set_to_none=True)
    loss = 0
    for branch in model.branches.values():
        first = next(m for m in branch.encoder.modules() if isinstance(m, nn.Linear))
        x = torch.randn(8, first.in_features, generator=g, dtype=first.weight.dtype)
        y = torch.randint(0, C, (8,), generator=g)
        loss = loss + F.cross_entropy(branch(x), y)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def linear_index(model: LateFusionModel, modality: str) -> dict[str, nn.Linear]:
    return dict(model.head_linears(modality))


# ------------------------------------------------------------------ collect


def test_collect_builds_cov_and_T_of_every_head_linear():
    model = make_model(make_preset())
    batches = make_batches(1)
    projector = FlatProjector(TAU)
    projector.collect(model, "a", batches)
    covs, Ts = reference_Ts(model.branch("a"), batches)
    assert list(projector.cov["a"]) == ["head.0", "head.2", "head.3"]
    assert list(projector.T["a"]) == ["head.0", "head.2", "head.3"]
    for (name, cov), (_, T), ref_cov, ref_T in zip(
        projector.cov["a"].items(), projector.T["a"].items(), covs, Ts, strict=True
    ):
        assert cov.dtype == torch.float64 and T.dtype == torch.float64, name
        np.testing.assert_allclose(cov.numpy(), ref_cov, rtol=1e-10, atol=1e-13, err_msg=name)
        np.testing.assert_allclose(T.numpy(), ref_T, rtol=0, atol=1e-9, err_msg=name)


def test_collect_leaves_modes_bn_stats_and_other_modalities_alone():
    model = make_model(make_preset())
    model.eval()
    model.branch("a").train()
    flags = [m.training for m in model.modules()]
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    projector = FlatProjector(TAU)
    projector.collect(model, "a", make_batches(2))
    assert [m.training for m in model.modules()] == flags
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), k
    assert set(projector.T) == {"a"}
    assert not any(m._forward_pre_hooks for m in model.modules())  # hooks removed


def test_strength_is_trace_ratio_of_each_T():
    model = make_model(make_preset())
    batches = make_batches(3)
    projector = FlatProjector(TAU)
    projector.collect(model, "a", batches)
    _, Ts = reference_Ts(model.branch("a"), batches)
    strength = projector.strength("a")
    assert list(strength) == ["head.0", "head.2", "head.3"]
    for value, T in zip(strength.values(), Ts, strict=True):
        assert value == pytest.approx(np.trace(T) / T.shape[0], abs=1e-10)
        assert math.exp(-TAU) - 1e-12 <= value <= 1 + 1e-12
    assert projector.strength("b") == {}


# ------------------------------------------------------------------ begin_stage and apply


def test_apply_projects_exactly_the_paired_head_weight_grads():
    model = make_model(make_preset())
    batches = make_batches(4)
    projector = FlatProjector(TAU)
    projector.collect(model, "a", batches)
    _, Ts = reference_Ts(model.branch("a"), batches)

    paired = projector.begin_stage(model, "b", "a")
    assert sorted(paired) == ["head.0", "head.2", "head.3"]

    before = fill_grads(model)
    projector.apply()
    projected = {
        f"branches.b.{layer}.weight": T for layer, T in zip(["head.0", "head.2", "head.3"], Ts, strict=True)
    }
    for name, p in model.named_parameters():
        if name in projected:
            expected = before[name].numpy() @ projected[name]
            np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-9, atol=1e-12, err_msg=name)
            assert not torch.allclose(p.grad, before[name]), f"{name}: T acted as the identity"
        else:  # biases, encoders, the source branch
            assert torch.equal(p.grad, before[name]), name


def test_apply_acts_once_per_call():
    model = make_model(make_preset())
    batches = make_batches(5)
    projector = FlatProjector(TAU)
    projector.collect(model, "a", batches)
    _, Ts = reference_Ts(model.branch("a"), batches)
    projector.begin_stage(model, "b", "a")
    before = fill_grads(model)
    projector.apply()
    projector.apply()
    for layer, T in zip(["head.0", "head.2", "head.3"], Ts, strict=True):
        name = f"branches.b.{layer}.weight"
        got = dict(model.named_parameters())[name].grad.numpy()
        np.testing.assert_allclose(got, before[name].numpy() @ T @ T, rtol=1e-9, atol=1e-12)


def test_apply_keeps_float32_grads_float32():
    model = make_model(make_preset(), dtype=torch.float32)
    batches = make_batches(6, dtype=torch.float32)
    projector = FlatProjector(TAU)
    projector.collect(model, "a", batches)
    _, Ts = reference_Ts(model.branch("a"), batches)
    projector.begin_stage(model, "b", "a")
    before = fill_grads(model)
    projector.apply()
    for (layer, linear), T in zip(model.head_linears("b"), Ts, strict=True):
        assert linear.weight.grad.dtype == torch.float32
        expected = before[f"branches.b.{layer}.weight"].double().numpy() @ T
        np.testing.assert_allclose(linear.weight.grad.double().numpy(), expected, rtol=1e-4, atol=1e-6)


def test_apply_skips_layers_without_grad():
    model = make_model(make_preset())
    projector = FlatProjector(TAU)
    projector.collect(model, "a", make_batches(7))
    projector.begin_stage(model, "b", "a")
    model.zero_grad(set_to_none=True)
    projector.apply()  # must not fail
    assert all(linear.weight.grad is None for _, linear in model.head_linears("b"))
    assert projector.stage_report() == {"head.0": 0.0, "head.2": 0.0, "head.3": 0.0}


@pytest.mark.parametrize("source", [None, "b", "nope"])
def test_begin_stage_without_a_T_pairs_nothing(source):
    # None: no source; "b"/"nope": a modality whose T was never collected → T = I.
    model = make_model(make_preset())
    projector = FlatProjector(TAU)
    projector.collect(model, "a", make_batches(8))
    assert projector.begin_stage(model, "a", source) == []
    before = fill_grads(model)
    projector.apply()
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, before[name]), name
    assert projector.stage_report() == {}


def test_disabled_projector_pairs_nothing():
    model = make_model(make_preset())
    projector = FlatProjector(TAU, enabled=False)
    projector.collect(model, "a", make_batches(9))
    assert projector.begin_stage(model, "b", "a") == []


def test_begin_stage_resets_previous_pairing():
    model = make_model(make_preset())
    projector = FlatProjector(TAU)
    projector.collect(model, "a", make_batches(10))
    assert projector.begin_stage(model, "b", "a")
    assert projector.begin_stage(model, "b", None) == []
    before = fill_grads(model)
    projector.apply()
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, before[name]), name


def test_mismatched_feature_dim_leaves_that_layer_unpaired():
    # a: d = 6, b: d = 7 → b's head.0 (in 7) has no partner; head.2 and head.3 still pair.
    model = make_model(make_preset(dims=[6, 7]))
    batches = make_batches(11)
    projector = FlatProjector(TAU)
    projector.collect(model, "a", batches)
    _, Ts = reference_Ts(model.branch("a"), batches)
    assert sorted(projector.begin_stage(model, "b", "a")) == ["head.2", "head.3"]
    before = fill_grads(model)
    projector.apply()
    params = dict(model.named_parameters())
    assert torch.equal(params["branches.b.head.0.weight"].grad, before["branches.b.head.0.weight"])
    for layer, T in (("head.2", Ts[1]), ("head.3", Ts[2])):
        name = f"branches.b.{layer}.weight"
        np.testing.assert_allclose(params[name].grad.numpy(), before[name].numpy() @ T, rtol=1e-9, atol=1e-12)


def test_mismatch_in_the_middle_of_the_head_skips_only_that_layer():
    # a: head 6→5→4→C (inputs 6, 5, 4); b: head 6→7→4→C (inputs 6, 7, 4): only head.2 differs.
    torch.manual_seed(4)

    def encoder() -> nn.Module:
        return nn.Sequential(nn.Linear(IN, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 6))

    model = LateFusionModel(
        {"a": Branch(encoder(), build_head(6, [5, 4], C)), "b": Branch(encoder(), build_head(6, [7, 4], C))}
    ).double()
    batches = make_batches(14)
    projector = FlatProjector(TAU)
    projector.collect(model, "a", batches)
    _, (T0, _, T3) = reference_Ts(model.branch("a"), batches)
    assert sorted(projector.begin_stage(model, "b", "a")) == ["head.0", "head.3"]
    before = fill_grads(model)
    projector.apply()
    params = dict(model.named_parameters())
    for layer, T in (("head.0", T0), ("head.3", T3)):
        name = f"branches.b.{layer}.weight"
        np.testing.assert_allclose(params[name].grad.numpy(), before[name].numpy() @ T, rtol=1e-9, atol=1e-12)
    assert torch.equal(params["branches.b.head.2.weight"].grad, before["branches.b.head.2.weight"])


def extra_layer_model() -> LateFusionModel:
    """a: head 6→5→4→C; b: head 7→6→5→4→C, one extra first layer (as the text–image presets)."""
    torch.manual_seed(3)

    def encoder(dim: int) -> nn.Module:
        return nn.Sequential(nn.Linear(IN, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, dim))

    model = LateFusionModel(
        {
            "a": Branch(encoder(6), build_head(6, [5, 4], C)),
            "b": Branch(encoder(7), build_head(7, [6, 5, 4], C)),
        }
    ).double()
    warm_up_bn(model, torch.float64)
    return model


def test_pairing_is_aligned_from_the_classifier_backwards():
    model = extra_layer_model()
    batches = make_batches(12)
    projector = FlatProjector(TAU)
    projector.collect(model, "a", batches)
    _, (T0, T2, T3) = reference_Ts(model.branch("a"), batches)  # a's head.0 (6), head.2 (5), head.3 (4)
    # b's head.4 ↔ a.head.3, head.3 ↔ a.head.2, head.2 ↔ a.head.0; b's head.0 (in 7) has no partner.
    assert sorted(projector.begin_stage(model, "b", "a")) == ["head.2", "head.3", "head.4"]
    before = fill_grads(model)
    projector.apply()
    params = dict(model.named_parameters())
    for layer, T in (("head.2", T0), ("head.3", T2), ("head.4", T3)):
        name = f"branches.b.{layer}.weight"
        np.testing.assert_allclose(params[name].grad.numpy(), before[name].numpy() @ T, rtol=1e-9, atol=1e-12)
    assert torch.equal(params["branches.b.head.0.weight"].grad, before["branches.b.head.0.weight"])


def test_pairing_with_a_deeper_source_head_uses_its_last_layers():
    model = extra_layer_model()
    batches = make_batches(13)
    projector = FlatProjector(TAU)
    projector.collect(model, "b", batches)
    _, (_, T6, T5, T4) = reference_Ts(model.branch("b"), batches)  # b's inputs 7, 6, 5, 4
    assert sorted(projector.begin_stage(model, "a", "b")) == ["head.0", "head.2", "head.3"]
    before = fill_grads(model)
    projector.apply()
    params = dict(model.named_parameters())
    for layer, T in (("head.0", T6), ("head.2", T5), ("head.3", T4)):
        name = f"branches.a.{layer}.weight"
        np.testing.assert_allclose(params[name].grad.numpy(), before[name].numpy() @ T, rtol=1e-9, atol=1e-12)


def test_three_modalities_take_T_from_the_previous_modality_in_the_cycle():
    names = ["a", "b", "c"]
    preset = make_preset(names=names, epochs=[1] * 7)
    model = make_model(preset)
    schedule = StageSchedule.from_preset(preset)
    data = {m: make_batches(20 + i) for i, m in enumerate(names)}
    projector = FlatProjector(TAU)
    reference: dict[str, list[np.ndarray]] = {}
    for stage in schedule:
        (active,) = stage.active
        s, m = stage.index, len(names)
        assert active == names[s % m]
        assert stage.source == names[(s - 1) % m]
        # the paper's k = mod(j + m − 2, m) + 1 for 1-based j
        j = s % m + 1
        assert previous_modality(names, j) == stage.source == (names[-1] if j == 1 else names[j - 2])

        paired = projector.begin_stage(model, active, stage.source)
        before = fill_grads(model, seed=s)
        projector.apply()
        if stage.source not in reference:  # first cycle, stage 0: no T of the last modality yet
            assert s == 0 and paired == []
        else:
            assert sorted(paired) == ["head.0", "head.2", "head.3"]
            params = dict(model.named_parameters())
            for layer, T in zip(["head.0", "head.2", "head.3"], reference[stage.source], strict=True):
                name = f"branches.{active}.{layer}.weight"
                expected = before[name].numpy() @ T
                np.testing.assert_allclose(params[name].grad.numpy(), expected, rtol=1e-9, atol=1e-12)
                for other in set(reference) - {stage.source}:  # not another modality's T
                    k = ["head.0", "head.2", "head.3"].index(layer)
                    wrong = before[name].numpy() @ reference[other][k]
                    assert not np.allclose(params[name].grad.numpy(), wrong, rtol=1e-6, atol=1e-9)
        # end of stage: collect the active modality (Algorithm 1, lines 11–13)
        projector.collect(model, active, data[active])
        reference[active] = reference_Ts(model.branch(active), data[active])[1]


# ------------------------------------------------------------------ report and meters


def run_steps(projector: FlatProjector, model: LateFusionModel, modality: str, steps: int, seed: int):
    """Set random weight grads, apply; returns Σ‖g‖² and Σ‖gT‖² per layer, computed here."""
    g = torch.Generator().manual_seed(seed)
    Ts = {p.name: p.T.numpy() for p in projector._active}
    sums = {name: [0.0, 0.0] for name in Ts}
    linears = linear_index(model, modality)
    for _ in range(steps):
        for name, T in Ts.items():
            w = linears[name].weight
            grad = torch.randn(w.shape, generator=g, dtype=w.dtype) * float(torch.rand((), generator=g) * 3)
            w.grad = grad.clone()
            sums[name][0] += float((grad.numpy() ** 2).sum())
            sums[name][1] += float(((grad.numpy() @ T) ** 2).sum())
        projector.apply()
    return sums


def test_stage_report_is_pooled_share_of_norm_removed():
    model = make_model(make_preset())
    projector = FlatProjector(TAU)
    projector.collect(model, "a", make_batches(30))
    projector.begin_stage(model, "b", "a")
    sums = run_steps(projector, model, "b", steps=4, seed=0)
    report = projector.stage_report()
    assert set(report) == {"head.0", "head.2", "head.3"}
    for name, (g2, p2) in sums.items():
        assert report[name] == pytest.approx(1 - math.sqrt(p2 / g2), rel=1e-9)
        assert 0 <= report[name] <= 1 - math.exp(-TAU) + 1e-12
    # a new stage starts with empty meters
    projector.begin_stage(model, "b", "a")
    assert projector.stage_report() == {"head.0": 0.0, "head.2": 0.0, "head.3": 0.0}


def test_meter_state_round_trips_mid_stage():
    model = make_model(make_preset())
    first = FlatProjector(TAU)
    first.collect(model, "a", make_batches(31))
    first.begin_stage(model, "b", "a")
    sums = run_steps(first, model, "b", steps=2, seed=1)
    meter = first.meter_state()
    for name, (g2, p2) in sums.items():
        assert meter[name] == pytest.approx([g2, p2], rel=1e-12)

    resumed = FlatProjector(TAU)
    resumed.load_state_tensors(first.state_tensors())
    resumed.begin_stage(model, "b", "a")
    resumed.load_meter(meter)
    assert resumed.stage_report() == pytest.approx(first.stage_report(), rel=1e-12)
    # both continue identically
    more_first = run_steps(first, model, "b", steps=2, seed=2)
    more_resumed = run_steps(resumed, model, "b", steps=2, seed=2)
    assert more_first == more_resumed
    assert resumed.stage_report() == pytest.approx(first.stage_report(), rel=1e-12)


# ------------------------------------------------------------------ checkpoint tensors


def test_state_tensors_keys_and_values():
    model = make_model(make_preset())
    projector = FlatProjector(TAU)
    projector.collect(model, "a", make_batches(40))
    projector.collect(model, "b", make_batches(41))
    tensors = projector.state_tensors()
    layers = ["head.0", "head.2", "head.3"]
    assert set(tensors) == {
        f"gm.{kind}.{m}.{layer}" for kind in ("T", "cov") for m in "ab" for layer in layers
    }
    for m in "ab":
        for layer in layers:
            assert torch.equal(tensors[f"gm.T.{m}.{layer}"], projector.T[m][layer])
            assert torch.equal(tensors[f"gm.cov.{m}.{layer}"], projector.cov[m][layer])


def deep_head_preset() -> Preset:
    # 10 hidden widths → head Linears head.0, head.2 … head.11: alphabetical order ≠ forward order.
    return make_preset(widths=[5, 4, 4, 4, 4, 4, 4, 4, 4, 4])


def test_load_state_tensors_round_trips_through_safetensors_in_layer_order():
    model = make_model(deep_head_preset())
    projector = FlatProjector(TAU)
    projector.collect(model, "a", make_batches(42))
    projector.collect(model, "b", make_batches(43))
    forward_order = [name for name, _ in model.head_linears("a")]
    assert forward_order != sorted(forward_order)  # the case this test is about

    blob = safetensors.torch.save({**projector.state_tensors(), "model.weight": torch.zeros(2)})
    loaded = safetensors.torch.load(io.BytesIO(blob).getvalue())
    restored = FlatProjector(TAU)
    restored.load_state_tensors(loaded)

    for table, original in ((restored.T, projector.T), (restored.cov, projector.cov)):
        assert set(table) == {"a", "b"}
        for m in "ab":
            assert list(table[m]) == forward_order
            for layer in forward_order:
                assert table[m][layer].dtype == torch.float64
                assert torch.equal(table[m][layer], original[m][layer])


def test_restored_projector_pairs_and_projects_like_the_original():
    preset = make_preset(dims=[6, 7], widths=[5, 4, 4, 4, 4, 4, 4, 4, 4, 4])
    model = make_model(preset)
    original = FlatProjector(TAU)
    original.collect(model, "a", make_batches(44))
    restored = FlatProjector(TAU)
    restored.load_state_tensors(dict(sorted(original.state_tensors().items())))  # keys as safetensors returns

    paired = original.begin_stage(model, "b", "a")
    assert restored.begin_stage(model, "b", "a") == paired
    assert "head.0" not in paired and len(paired) == 10
    grads = fill_grads(model)
    original.apply()
    after_original = {name: p.grad.clone() for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.grad = grads[name].clone()
    restored.apply()
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, after_original[name]), name
