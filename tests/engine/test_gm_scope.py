"""gm.scope=fraction on tiny ResNets: which layers, conv T from unfolded patches, ∇W ← ∇W T (Table 4).

References are computed here independently: parameter counts from the layer formulas,
patches cut out of zero-padded numpy maps by explicit loops, T by the paper's SVD.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from igm_cli.engine.flat_projector import FlatProjector
from igm_cli.engine.gm_scope import fraction_scope, head_scope
from igm_cli.engine.projection import batch_mean_patch_outer, projection_matrix
from igm_cli.errors import PresetError
from igm_cli.methods import get_method
from igm_cli.models import build_model
from igm_cli.presets import Preset, resolve_preset

TAU = 0.4
C = 6
TINY = {"name": "resnet18", "widths": [4, 8], "depths": [1, 1], "embedding": 4}
STAGE = "encoder.net.encoder.stages"
STEM = "encoder.net.embedder.embedder.convolution"


def make_model(shapes: dict[str, list[int]], seed: int = 0):
    shapes = shapes if len(shapes) > 1 else {**shapes, "other": [16, 12]}  # igm needs two modalities
    preset = Preset.model_validate(
        {"modalities": [{"name": m, "encoder": TINY} for m in shapes], "head": {"widths": [8, 4]}}
    )
    torch.manual_seed(seed)
    return build_model(preset, shapes, C).double()


def batches(seed: int, shape: tuple[int, ...], n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(5, *shape, generator=g, dtype=torch.float64) + 0.5 for _ in range(n)]


# ------------------------------------------------------------------ which layers (by name and share)

# Registration (= forward) order of a 1-channel tiny branch and each module's parameters by the
# layer formulas: conv out·in·k·k (no bias), BatchNorm 2·C, Linear (in+1)·out.
TINY_MODULES = [
    (STEM, 4 * 1 * 7 * 7),
    ("encoder.net.embedder.embedder.normalization", 2 * 4),
    (f"{STAGE}.0.layers.0.layer.0.convolution", 4 * 4 * 9),
    (f"{STAGE}.0.layers.0.layer.0.normalization", 2 * 4),
    (f"{STAGE}.0.layers.0.layer.1.convolution", 4 * 4 * 9),
    (f"{STAGE}.0.layers.0.layer.1.normalization", 2 * 4),
    (f"{STAGE}.1.layers.0.shortcut.convolution", 8 * 4),
    (f"{STAGE}.1.layers.0.shortcut.normalization", 2 * 8),
    (f"{STAGE}.1.layers.0.layer.0.convolution", 8 * 4 * 9),
    (f"{STAGE}.1.layers.0.layer.0.normalization", 2 * 8),
    (f"{STAGE}.1.layers.0.layer.1.convolution", 8 * 8 * 9),
    (f"{STAGE}.1.layers.0.layer.1.normalization", 2 * 8),
    ("head.0", (8 + 1) * 8),
    ("head.2", (8 + 1) * 4),
    ("head.3", (4 + 1) * C),
]
TOTAL = sum(n for _, n in TINY_MODULES)  # 1590


def expected_scope(fraction: float) -> tuple[list[str], int]:
    """Modules from the classifier back until their parameters reach `fraction` of the total."""
    chosen, covered = [], 0
    for name, n in reversed(TINY_MODULES):
        if covered >= fraction * TOTAL:
            break
        chosen.append(name)
        covered += n
    return [n for n in reversed(chosen) if not n.endswith("normalization")], covered


@pytest.mark.parametrize(
    ("fraction", "names"),
    [
        (0.02, ["head.2", "head.3"]),  # head.3 alone is 30 < 31.8: head.2 crosses the threshold
        (0.05, ["head.0", "head.2", "head.3"]),  # the head: 138 of 1590 = 8.7 %
        (0.3, [f"{STAGE}.1.layers.0.layer.1.convolution", "head.0", "head.2", "head.3"]),
        (
            0.5,
            [f"{STAGE}.1.layers.0.layer.0.convolution", f"{STAGE}.1.layers.0.layer.1.convolution"]
            + ["head.0", "head.2", "head.3"],
        ),
        (1.0, [n for n, _ in TINY_MODULES if not n.endswith("normalization")]),
    ],
)
def test_fraction_picks_layers_from_the_classifier_back(fraction, names):
    branch = make_model({"a": [16, 12]}).branch("a")
    scope = fraction_scope(branch, fraction)
    assert TOTAL == 1590 == sum(p.numel() for p in branch.parameters())
    assert [n for n, _ in scope.layers] == names
    ref_names, covered = expected_scope(fraction)
    assert ref_names == names
    assert scope.covered == covered and scope.total == TOTAL
    assert scope.share == pytest.approx(covered / TOTAL) and scope.share >= fraction
    assert all(n.endswith("normalization") for n in scope.without_T)


def test_head_scope_is_the_head_linears_and_its_share():
    branch = make_model({"a": [16, 12]}).branch("a")
    scope = head_scope(branch)
    assert [n for n, _ in scope.layers] == ["head.0", "head.2", "head.3"]
    assert scope.covered == 72 + 36 + 30


def test_resnet18_at_paper_size_covers_the_head_as_1_3_percent_and_30_percent_reaches_layer4():
    """The paper's Table 4 says the head is 1.3 % of a CREMA-D branch (meta device: no memory)."""
    resnet = {"name": "resnet18"}
    modalities = [{"name": "audio", "encoder": resnet}, {"name": "video", "encoder": resnet}]
    preset = Preset.model_validate({"modalities": modalities, "head": {"widths": [256, 64]}})
    with torch.device("meta"):
        branch = build_model(preset, {"audio": [257, 188], "video": [1, 3, 224, 224]}, 6).branch("audio")
    assert round(100 * head_scope(branch).share, 1) == 1.3
    scope = fraction_scope(branch, 0.3)
    convs = [n for n, _ in scope.layers if not n.startswith("head")]
    assert convs == [f"{STAGE}.3.layers.1.layer.0.convolution", f"{STAGE}.3.layers.1.layer.1.convolution"]
    assert [layer.in_channels * 9 for n, layer in scope.layers if n in convs] == [4608, 4608]


# ------------------------------------------------------------------ conv covariance and T


def numpy_patch_cov(maps: list[np.ndarray], k: int, stride: int, pad: int) -> np.ndarray:
    """Σ over batches of PᵀP, P the patches (rows: positions, columns: c·k·k) of the batch-mean map."""
    total = 0
    for x in maps:
        mean = np.pad(x.mean(0), ((0, 0), (pad, pad), (pad, pad)))  # (C, H+2p, W+2p)
        channels, height, width = mean.shape
        rows = [
            mean[:, i : i + k, j : j + k].reshape(-1)  # channel-major, then kernel rows, columns
            for i in range(0, height - k + 1, stride)
            for j in range(0, width - k + 1, stride)
        ]
        P = np.stack(rows)
        total = total + P.T @ P
    return total


@pytest.mark.parametrize(("k", "stride", "pad"), [(3, 1, 1), (3, 2, 1), (1, 2, 0), (7, 2, 3)])
def test_conv_covariance_is_the_patch_matrix_of_the_batch_mean(k, stride, pad):
    conv = nn.Conv2d(3, 5, k, stride=stride, padding=pad, bias=False)
    maps = batches(1, (3, 11, 9))
    got = sum(batch_mean_patch_outer(x, conv) for x in maps)
    ref = numpy_patch_cov([x.numpy() for x in maps], k, stride, pad)
    assert got.dtype == torch.float64 and got.shape == (3 * k * k, 3 * k * k)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-11, atol=1e-11)


def reference_T(cov: np.ndarray, tau: float = TAU) -> np.ndarray:
    """Eq. 4 via the paper's SVD."""
    _, s, vt = np.linalg.svd((cov + cov.T) / 2)
    sigma = np.exp(-tau * (s - s[-1]) / (s[0] - s[-1]))
    return vt.T @ np.diag(sigma) @ vt


def conv_inputs(model, modality: str, name: str, xs: list[torch.Tensor]) -> list[np.ndarray]:
    """The input maps a conv of the branch sees, model in eval mode (as the covariance pass)."""
    branch, seen = model.branch(modality), []
    layer = dict(branch.named_modules())[name]
    handle = layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().numpy()))
    branch.eval()
    with torch.no_grad():
        for x in xs:
            branch(x)
    handle.remove()
    return seen


def test_collect_builds_conv_T_from_unfolded_patches_and_it_keeps_the_invariants():
    model = make_model({"a": [16, 12]})
    xs = batches(2, (1, 16, 12))
    projector = FlatProjector(TAU, scope="fraction", fraction=1.0)
    projector.collect(model, "a", xs)
    convs = {  # name → (kernel, stride, padding) of every conv of the tiny ResNet
        STEM: (7, 2, 3),
        f"{STAGE}.0.layers.0.layer.0.convolution": (3, 1, 1),
        f"{STAGE}.1.layers.0.shortcut.convolution": (1, 2, 0),
        f"{STAGE}.1.layers.0.layer.0.convolution": (3, 2, 1),
        f"{STAGE}.1.layers.0.layer.1.convolution": (3, 1, 1),
    }
    for name, (k, stride, pad) in convs.items():
        ref_cov = numpy_patch_cov(conv_inputs(model, "a", name, xs), k, stride, pad)
        cov, T = projector.cov["a"][name], projector.T["a"][name]
        np.testing.assert_allclose(cov.numpy(), ref_cov, rtol=1e-10, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(T.numpy(), reference_T(ref_cov), atol=1e-8, err_msg=name)
        eig = np.linalg.eigvalsh(T.numpy())
        assert torch.equal(T, T.T), name
        assert eig.min() >= math.exp(-TAU) - 1e-9 and eig.max() <= 1 + 1e-9, name
        tiny = projection_matrix(cov, 1e-12)
        torch.testing.assert_close(tiny, torch.eye(len(tiny), dtype=torch.float64), atol=1e-9, rtol=0)
    assert set(projector.T["a"]) == {n for n, _ in fraction_scope(model.branch("a"), 1.0).layers}


# ------------------------------------------------------------------ pairing and ∇W ← ∇W T


def fill_grads(model, modality: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model.branch(modality).train()
    F.cross_entropy(model.branch(modality)(x), torch.arange(len(x)) % C).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_apply_projects_scoped_conv_and_head_grads_and_leaves_the_rest_untouched():
    model = make_model({"a": [16, 12], "b": [16, 12]})
    projector = FlatProjector(TAU, scope="fraction", fraction=0.5)
    projector.collect(model, "a", batches(3, (1, 16, 12)))
    paired = projector.begin_stage(model, "b", "a")
    scoped = [f"{STAGE}.1.layers.0.layer.0.convolution", f"{STAGE}.1.layers.0.layer.1.convolution"]
    assert paired == [*scoped, "head.0", "head.2", "head.3"]
    before = fill_grads(model, "b", batches(4, (1, 16, 12), 1)[0])
    projector.apply()
    weights = {f"branches.b.{n}.weight": n for n in paired}
    for name, p in model.named_parameters():
        if name not in before:
            continue
        if name in weights:
            g = before[name].numpy()
            T = projector.T["a"][weights[name]].numpy()
            expected = (g.reshape(g.shape[0], -1) @ T).reshape(g.shape)  # conv: (out, in·k·k) @ T
            np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-9, atol=1e-12, err_msg=name)
            assert not torch.allclose(p.grad, before[name]), f"{name}: T acted as the identity"
        else:  # BatchNorm, biases, convs outside the scope
            assert torch.equal(p.grad, before[name]), name
    report = {row["layer"]: row for row in projector.layer_report()}
    assert set(report) == set(paired)
    assert report[scoped[1]]["T_size"] == 8 * 9 and report[scoped[1]]["T_of"] == f"a.{scoped[1]}"
    assert 0 < report[scoped[1]]["removed_share"] < 1
    assert report[scoped[1]]["T_trace_ratio"] == pytest.approx(
        float(torch.trace(projector.T["a"][scoped[1]])) / 72
    )


def test_layers_without_a_partner_get_no_T_and_are_listed():
    """A 1-channel and a 3-channel stem differ (49 vs 147 patch values): the stem stays unpaired."""
    model = make_model({"a": [16, 12], "v": [1, 3, 16, 16]})
    projector = FlatProjector(TAU, scope="fraction", fraction=1.0)
    projector.collect(model, "v", batches(5, (1, 3, 16, 16)))
    paired = projector.begin_stage(model, "a", "v")
    assert paired == [n for n, _ in TINY_MODULES if not n.endswith("normalization") and n != STEM]
    assert projector.pairs[STEM] is None
    assert {n: s for n, s in projector.pairs.items() if n != STEM} == {n: f"v.{n}" for n in paired}
    assert [r["layer"] for r in projector.layer_report() if r["T_of"] is None] == [STEM]
    before = fill_grads(model, "a", batches(6, (1, 16, 12), 1)[0])
    projector.apply()
    stem = dict(model.named_parameters())[f"branches.a.{STEM}.weight"]
    assert torch.equal(stem.grad, before[f"branches.a.{STEM}.weight"])


def test_mie_head_only_options_refuse_the_fraction_scope():
    sets = ["method=mie", "gm.scope=fraction"]
    for option in ("mie.layers=penultimate", "mie.covariance=centred"):
        with pytest.raises(PresetError, match=option):
            get_method(resolve_preset("mfeat", [*sets, option]))
    assert get_method(resolve_preset("mfeat", sets)).projector.scope == "fraction"  # defaults: fine


@pytest.mark.parametrize("sets", [[], ["recipe=reference"], ["method=mie"]])
def test_every_gm_method_builds_its_projector_with_the_scope(sets):
    method = get_method(resolve_preset("mfeat", [*sets, "gm.scope=fraction", "gm.fraction=0.7"]))
    assert (method.projector.scope, method.projector.fraction) == ("fraction", 0.7)


def test_working_copy_of_T_has_no_subnormal_float32_entries():
    """Subnormals slow CPU matmuls ~10×: they are flushed to 0, every normal entry is kept exactly."""
    from igm_cli.engine.projection import working_copy

    T = torch.tensor([[1.0, 1e-40, -3e-39], [1e-40, 0.9, 2e-30], [-3e-39, 2e-30, 0.8]], dtype=torch.float64)
    weight = torch.zeros(2, 3)
    got = working_copy(T, weight)
    tiny = torch.finfo(torch.float32).tiny
    assert got.dtype == torch.float32 and not ((got != 0) & (got.abs() < tiny)).any()
    expected = T.to(torch.float32)
    expected[T.abs() < tiny] = 0
    assert torch.equal(got, expected) and got[1, 2] == torch.tensor(2e-30, dtype=torch.float32)
