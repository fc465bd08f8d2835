"""One step of each method against an independent computation (numpy, or separate autograd calls)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from igm_cli.engine.fusion import FUSED, batch_axis_entropy_fusion, entropy_logit_fusion, fuse
from igm_cli.methods import get_method
from igm_cli.methods.mla import owm_update
from igm_cli.presets import Preset

LR = 0.1


def tiny_preset(method: str, names=("a", "b"), dims=None, **extra) -> Preset:
    dims = dims or dict.fromkeys(names, 6)
    return Preset.model_validate(
        {
            "method": method,
            "modalities": [
                {"name": n, "encoder": {"name": "mlp", "hidden": [8], "dim": dims[n], "batchnorm": False}}
                for n in names
            ],
            "head": {"widths": [5, 4]},
            "optimizer": {"name": "sgd", "lr": LR, "momentum": 0.0, "weight_decay": 0.0},
            **extra,
        }
    )


def batch(names, n=16, d=10, classes=3, seed=5):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, d, generator=g, dtype=torch.float64) + 1 for m in names}
    return inputs, torch.randint(0, classes, (n,), generator=g)


def one_batch(method, model, inputs, labels):
    """The Trainer's step sequence for one batch, without SAM (its own tests cover SAM)."""
    stage = method.schedule()[0]
    params = list(dict.fromkeys(p for mod in method.train_modules(model, stage) for p in mod.parameters()))
    optimizer = torch.optim.SGD(params, lr=LR)
    for substep in method.substeps(model, stage, params):
        optimizer.zero_grad(set_to_none=True)
        substep.gradients(inputs, labels, False)
        method.before_step(substep)
        optimizer.step()
        method.after_step(substep)


def np_owm(P: np.ndarray, x: np.ndarray, alpha: float) -> np.ndarray:
    Px = P @ x
    return P - np.outer(Px, Px) / (alpha + x @ P @ x)


# ---------------------------------------------------------------- MLA


def test_owm_update_is_the_papers_recursion_and_projects_out_the_input():
    rng = np.random.default_rng(0)
    P = np.eye(5)
    for _ in range(3):
        x = rng.normal(size=5)
        P_t = owm_update(torch.from_numpy(P), torch.from_numpy(x), 0.5).numpy()
        np.testing.assert_allclose(P_t, np_owm(P, x, 0.5), rtol=1e-12)
        P = P_t
    x = rng.normal(size=5)
    tiny = owm_update(torch.eye(5, dtype=torch.float64), torch.from_numpy(x), 1e-9).numpy()
    assert np.abs(tiny @ x).max() < 1e-6 * np.abs(x).max()  # α → 0: x is projected out


@pytest.mark.parametrize("projection", ["paper", "off"])
def test_mla_batch_is_one_step_per_modality_with_the_numpy_projection(projection):
    preset = tiny_preset("mla", mla={"alpha": 0.7, "projection": projection})
    method = get_method(preset)
    torch.manual_seed(0)
    model = method.build_model({"a": [10], "b": [10]}, 3).double()
    reference = copy.deepcopy(model)
    inputs, labels = batch(["a", "b"])

    # independent: per modality, the head weight gradient by a separate autograd call,
    # the projection and the OWM recursion in numpy
    P = np.eye(6)
    for m in ("a", "b"):
        z = reference.branch(m)(inputs[m])
        loss = F.cross_entropy(reference.head(z), labels)
        params = [*reference.branch(m).parameters(), *reference.head.parameters()]
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                if p is reference.head.weight and projection == "paper":
                    g = torch.from_numpy(g.numpy() @ P.T)
                p -= LR * g
        if projection == "paper":
            P = np_owm(P, z.detach().numpy().mean(0), 0.7)

    one_batch(method, model, inputs, labels)
    for (k, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=k)
    np.testing.assert_allclose(method.P.numpy(), P if projection == "paper" else np.eye(6), rtol=1e-10)
    if projection == "paper":
        assert not np.allclose(P, np.eye(6))  # the projection did act on modality b's step


def test_shared_head_with_unequal_feature_sizes_names_the_field():
    from igm_cli.errors import PresetError

    with pytest.raises(PresetError, match=r"modalities\.b\.encoder: .*same feature size"):
        get_method(tiny_preset("mla", dims={"a": 6, "b": 4}))


def np_softmax(z, axis=-1):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def test_entropy_fusion_on_logits_is_per_sample():
    rng = np.random.default_rng(1)
    za, zb = rng.normal(size=(7, 4)) * 3, rng.normal(size=(7, 4))
    expected = []
    for i in range(7):  # by hand, one sample at a time
        H = [-(p * np.log(p)).sum() for p in (np_softmax(za[i]), np_softmax(zb[i]))]
        w = np.exp(max(H) - np.array(H))
        w /= w.sum()
        expected.append(np_softmax(w[0] * za[i] + w[1] * zb[i]))
    got = entropy_logit_fusion([torch.from_numpy(za), torch.from_numpy(zb)]).numpy()
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-10)
    # per sample: changing one sample leaves the others' fused outputs alone
    zb2 = zb.copy()
    zb2[0] *= 10
    other = entropy_logit_fusion([torch.from_numpy(za), torch.from_numpy(zb2)]).numpy()
    np.testing.assert_allclose(other[1:], got[1:], rtol=1e-12)


def test_released_entropy_fusion_uses_the_batch_axis():
    rng = np.random.default_rng(2)
    za, zb = rng.normal(size=(6, 4)) * 3, rng.normal(size=(6, 4))
    expected = []
    for chunk in (slice(0, 4), slice(4, 6)):  # evaluation batches of 4
        H = []
        for z in (za[chunk], zb[chunk]):
            p = np_softmax(z, axis=0)  # softmax over the batch axis, as the released code
            H.append(-(p * np.log(p)).sum())
        w = np.exp(max(H) - np.array(H))
        w /= w.sum()
        expected.append(np_softmax(w[0] * za[chunk] + w[1] * zb[chunk]))
    got = batch_axis_entropy_fusion([torch.from_numpy(za), torch.from_numpy(zb)], 4).numpy()
    np.testing.assert_allclose(got, np.concatenate(expected), rtol=1e-10)
    # one weight per batch: changing one sample changes the fused output of the others in its batch
    zb2 = zb.copy()
    zb2[0] *= 10
    other = batch_axis_entropy_fusion([torch.from_numpy(za), torch.from_numpy(zb2)], 4).numpy()
    assert not np.allclose(other[1:4], got[1:4])
    np.testing.assert_allclose(other[4:], got[4:], rtol=1e-12)


def test_mla_released_lists_its_deviations_and_fuses_over_the_batch_axis():
    method = get_method(tiny_preset("mla", mla={"projection": "released"}))
    assert method.fusion == "entropy_batch"
    assert {d["switch"] for d in method.deviations()} == {"mla.projection=released"}
    assert len(method.deviations()) == 2
    assert get_method(tiny_preset("mla")).deviations() == []


# ---------------------------------------------------------------- DGL


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_dgl_routes_alpha_unimodal_gradients_to_encoders_and_fused_to_the_module(fusion):
    names = ("a", "b", "c")
    preset = tiny_preset("dgl", names, dims={"a": 6, "b": 4, "c": 5}, dgl={"alpha": 3.0, "fusion": fusion})
    method = get_method(preset)
    torch.manual_seed(0)
    model = method.build_model(dict.fromkeys(names, [10]), 3).double()
    inputs, labels = batch(names)
    encoders = [p for m in names for p in model.branch(m).parameters()]
    module = list(model.fusion.parameters())

    # two separate autograd calls, no gradient surgery
    features = {m: model.branch(m)(inputs[m]) for m in names}
    unimodal = sum(F.cross_entropy(model.fuse_features({m: z}), labels) for m, z in features.items())
    want_enc = torch.autograd.grad(3.0 * unimodal, encoders, retain_graph=True)
    detached = {m: z.detach() for m, z in features.items()}
    want_mod = torch.autograd.grad(F.cross_entropy(model.fuse_features(detached), labels), module)
    # the unimodal losses do reach the module, so dropping them is a real difference
    leaked = torch.autograd.grad(unimodal, module, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in leaked)

    stage = method.schedule()[0]
    params = list(model.parameters())
    (substep,) = method.substeps(model, stage, params)
    substep.gradients(inputs, labels, False)
    for p, g in zip(encoders, want_enc, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-12, atol=1e-14)
    for p, g in zip(module, want_mod, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-12, atol=1e-14)


def test_dgl_unimodal_prediction_is_the_module_with_other_features_zeroed():
    preset = tiny_preset("dgl", dims={"a": 6, "b": 4})
    method = get_method(preset)
    model = method.build_model({"a": [10], "b": [10]}, 3).double()
    inputs, _ = batch(["a", "b"])
    out = model(inputs)
    za, zb = model.branch("a")(inputs["a"]), model.branch("b")(inputs["b"])
    W, bias = model.fusion.weight, model.fusion.bias
    torch.testing.assert_close(out["a"], za @ W[:, :6].T + bias)
    torch.testing.assert_close(out["b"], zb @ W[:, 6:].T + bias)
    torch.testing.assert_close(out[FUSED], za @ W[:, :6].T + zb @ W[:, 6:].T + bias)
    torch.testing.assert_close(fuse(out, "module"), torch.softmax(out[FUSED], -1))


# ---------------------------------------------------------------- GM targets and MIE


def trained_stage_grads(preset, stage_index: int):
    """The gradient of stage `stage_index`'s first step before and after the method's hook."""
    method = get_method(preset)
    torch.manual_seed(0)
    model = method.build_model({"a": [10], "b": [10]}, 3).double()
    inputs, labels = batch(["a", "b"])
    stage = method.schedule()[0]
    method.end_stage(model, stage, lambda m: (inputs[m] + k for k in range(3)))  # T of a
    stage = method.schedule()[stage_index]
    params = list(model.branch(stage.active[0]).parameters())
    paired = method.begin_stage(model, stage, None)
    (substep,) = method.substeps(model, stage, params)
    substep.gradients(inputs, labels, False)
    before = [p.grad.clone() for p in params]
    method.before_step(substep)
    return paired, before, [p.grad for p in params]


def test_gm_targets_leaves_the_other_modality_untouched():
    paired, before, after = trained_stage_grads(tiny_preset("igm", gm={"targets": ["a"]}), 1)
    assert paired == []
    assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True))
    paired, before, after = trained_stage_grads(tiny_preset("igm", gm={"targets": ["b"]}), 1)
    assert paired == ["head.0", "head.2", "head.3"]
    assert sum(not torch.equal(x, y) for x, y in zip(before, after, strict=True)) == 3


def test_gm_targets_must_name_modalities():
    with pytest.raises(ValueError, match="gm.targets"):
        tiny_preset("igm", gm={"targets": ["video"]})


def test_mie_options_change_only_what_they_name():
    paired, *_ = trained_stage_grads(tiny_preset("mie", mie={"layers": "penultimate"}), 1)
    assert paired == ["head.2"]  # the layer before the classifier Linear(4, C)
    method = get_method(tiny_preset("mie", mie={"covariance": "centred"}))
    model = method.build_model({"a": [10], "b": [10]}, 3).double()
    inputs, _ = batch(["a", "b"])
    chunks = [inputs["a"][:8], inputs["a"][8:]]
    method.end_stage(model, method.schedule()[0], lambda m: iter(chunks))
    with torch.no_grad():
        z = [model.branch("a").encoder(c) for c in chunks]
    expected = sum(np.cov(c.numpy().T, bias=True) for c in z)
    np.testing.assert_allclose(method.projector.cov["a"]["head.0"].numpy(), expected, rtol=1e-10)


# ---------------------------------------------------------------- presets and sweeps across methods


def test_method_defaults_apply_below_set_and_only_for_the_chosen_method():
    from igm_cli.presets import resolve_preset

    assert resolve_preset("crema-d", ["method=mla"]).optimizer.lr == 0.001
    assert resolve_preset("crema-d", ["method=mla", "optimizer.lr=0.5"]).optimizer.lr == 0.5
    assert resolve_preset("crema-d", ["method=dgl"]).optimizer.clip_norm == 40
    assert resolve_preset("crema-d").optimizer.lr == 0.01  # igm keeps the preset's own
    assert resolve_preset("crema-d", ["method=joint"]).method_defaults == {}  # consumed


def test_a_method_sweep_resolves_each_methods_defaults():
    from igm_cli.sweep.plan import plan_sweep

    plan = plan_sweep("mfeat", grids=["method=igm,mla,dgl,mie,joint"], seeds=[0, 1])
    fusion = {s.values["method"]: s.preset["fusion"] for s in plan.settings}
    assert fusion == {
        "igm": "mean",
        "mla": "entropy_logits",
        "dgl": "mean",
        "mie": "entropy_logits",
        "joint": "mean",
    }


def test_paired_differences_are_per_seed_against_joint():
    from igm_cli.sweep.summary import summarize

    settings = [{"id": "j", "values": {"method": "joint"}}, {"id": "i", "values": {"method": "igm"}}]

    def record(setting, seed, acc, status="ok"):
        return {"setting": setting, "seed": seed, "status": status, "test": {"fused": {"accuracy": acc}}}

    records = [record("j", 0, 0.5), record("j", 1, 0.9), record("i", 0, 0.6), record("i", 1, 0.95)]
    records.append(record("i", 2, 0.1))  # no joint run on seed 2: not paired
    rows = {r["setting"]: r for r in summarize(settings, records)}
    paired = rows["i"]["paired"]
    assert rows["j"]["paired"] is None and paired["seeds"] == [0, 1]
    stats = paired["metrics"]["test"]["fused"]["accuracy"]
    assert stats["mean"] == pytest.approx(0.075)
    assert stats["std"] == pytest.approx(np.std([0.1, 0.05], ddof=1))
