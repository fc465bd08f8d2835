"""Robustness curves and imbalance measures of tiny checkpoints against independent computations."""

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score
from typer.testing import CliRunner

from igm_cli.analysis.corruption import Corrupter, build_corruption
from igm_cli.analysis.outputs import LEFT_OUT, ZEROED
from igm_cli.analysis.robustness import corrupted_output
from igm_cli.analysis.runner import evaluate_many
from igm_cli.cli import app
from igm_cli.engine.evaluate import eval_mode
from igm_cli.evaluation import evaluate_opened, open_checkpoint
from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from tests.helpers import TINY_SETS

trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
BRANCH = "encoder: {name: mlp, hidden: [16], dim: 8}"
RUNS = {
    "igm": [],
    "dgl": ["method=dgl", "baseline.epochs=2"],
    "mla": ["method=mla", "baseline.epochs=2"],
    "igm3": [
        "modalities=[" + ", ".join(f"{{name: {m}, {BRANCH}}}" for m in ("fou", "kar", "zer")) + "]",
        "stages.epochs=[1,1,1]",
    ],
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    out = {}
    for name, sets in RUNS.items():
        results = train(resolve_preset("mfeat", [*TINY_SETS, *sets]), runs_dir=root / name)
        out[name] = f"{results['run_dir']}/best.safetensors"
    return out


@torch.no_grad()
def independent_outputs(path):
    """Per-branch logits (and DGL features) by running the branches on the test arrays, labels."""
    opened = open_checkpoint(path)
    model, split = opened.model.eval(), opened.data.split("test")
    size = opened.preset.data.eval_batch_size
    chunks = {}
    for m in model.modalities:
        x = torch.from_numpy(np.asarray(split.inputs[m])).float()
        chunks[m] = torch.cat([model.branch(m)(x[i : i + size]) for i in range(0, len(x), size)])
    return model, chunks, np.asarray(split.labels)


def sk(probs_or_logits, labels):
    pred = probs_or_logits.argmax(1).numpy()
    return accuracy_score(labels, pred), f1_score(labels, pred, average="macro", zero_division=0)


def mean_fusion(logits, keep):
    return torch.stack([torch.softmax(logits[m], -1) for m in keep]).mean(0)


@pytest.fixture(scope="module")
def swept(checkpoints):
    return {name: evaluate_many([path], with_robustness=True, write=False)["checkpoints"][0] for name, path in
            checkpoints.items()}  # fmt: skip


@pytest.mark.parametrize("name", list(RUNS))
def test_r0_and_sigma0_are_igm_eval(swept, name):
    doc = swept[name]
    fused = doc["metrics"]["fused"]  # scikit-learn, as `igm eval` has always scored
    for curves in doc["robustness"]["modalities"].values():
        for kind in ("missing", "noise"):
            assert curves[kind]["accuracy"][0] == pytest.approx(fused["accuracy"], abs=1e-12)
            assert curves[kind]["macro_f1"][0] == pytest.approx(fused["macro_f1"], abs=1e-12)
        assert curves["missing"]["accuracy"] != curves["missing"]["accuracy"][:1] * 11  # it does move


def test_summary_is_the_trapezoid_area_and_the_drop_at_one_half(swept):
    for curves in swept["igm3"]["robustness"]["modalities"].values():
        for kind in ("missing", "noise"):
            for metric in ("accuracy", "macro_f1"):
                points, summary = curves[kind][metric], curves[kind]["summary"][metric]
                area = trapezoid(points, np.linspace(0, 1, 11))
                assert summary["area"] == pytest.approx(area, abs=1e-12)
                assert summary["drop_at_0.5"] == pytest.approx(points[0] - points[5], abs=1e-15)


@pytest.mark.parametrize("name", ["igm", "igm3"])
def test_r1_is_the_mean_fusion_of_the_other_branches_alone(swept, checkpoints, name):
    _, logits, labels = independent_outputs(checkpoints[name])
    robust = swept[name]["robustness"]
    assert robust["missing_means"] == LEFT_OUT
    assert len(robust["modalities"]) == len(logits)
    for m, curves in robust["modalities"].items():
        acc, f1 = sk(mean_fusion(logits, [k for k in logits if k != m]), labels)
        assert curves["missing"]["accuracy"][-1] == pytest.approx(acc, abs=1e-12)
        assert curves["missing"]["macro_f1"][-1] == pytest.approx(f1, abs=1e-12)


def test_mla_r1_is_the_other_branch_through_the_shared_head(swept, checkpoints):
    model, features, labels = independent_outputs(checkpoints["mla"])
    with torch.no_grad():
        logits = {m: model.head(z) for m, z in features.items()}  # one branch: its entropy weight is 1
    for m, curves in swept["mla"]["robustness"]["modalities"].items():
        (other,) = [k for k in logits if k != m]
        assert curves["missing"]["accuracy"][-1] == pytest.approx(sk(logits[other], labels)[0], abs=1e-12)


def test_dgl_goes_through_the_zeroed_feature_path(swept, checkpoints):
    model, features, labels = independent_outputs(checkpoints["dgl"])
    doc = swept["dgl"]
    assert doc["robustness"]["missing_means"] == ZEROED
    assert doc["imbalance"]["shapley"]["missing_means"] == ZEROED
    with torch.no_grad():
        for m, curves in doc["robustness"]["modalities"].items():
            others = {k: z for k, z in features.items() if k != m}
            zeroed = torch.cat([features[m] * 0 if k == m else z for k, z in features.items()], dim=-1)
            assert torch.equal(model.fuse_features(others), model.fusion(zeroed))  # concat: zeros in place
            assert curves["missing"]["accuracy"][-1] == pytest.approx(
                sk(model.fusion(zeroed), labels)[0], abs=1e-12
            )


@pytest.mark.parametrize("name", ["igm", "igm3", "dgl"])
def test_shapley_sums_to_fused_minus_chance_and_matches_brute_force(swept, checkpoints, name):
    model, outputs, labels = independent_outputs(checkpoints[name])
    doc = swept[name]
    shap = doc["imbalance"]["shapley"]
    chance = 1 / 10
    assert shap["method"] == "exact" and shap["empty_set_value"] == chance
    fused = doc["metrics"]["fused"]["accuracy"]
    assert sum(shap["values"].values()) == pytest.approx(fused - chance, abs=1e-12)

    def v(subset):
        if not subset:
            return chance
        with torch.no_grad():
            if name == "dgl":
                return sk(model.fuse_features({m: outputs[m] for m in subset}), labels)[0]
            return sk(mean_fusion(outputs, list(subset)), labels)[0]

    players = list(outputs)
    orders = list(itertools.permutations(players))
    brute = dict.fromkeys(players, 0.0)
    for order in orders:
        for k, p in enumerate(order):
            brute[p] += (v(order[: k + 1]) - v(order[:k])) / len(orders)
    assert shap["values"] == pytest.approx(brute, abs=1e-9)
    best = max(players, key=lambda m: doc["metrics"][m]["accuracy"])
    assert doc["imbalance"]["best_branch"] == best
    assert doc["imbalance"]["fused_minus_best_branch"] == pytest.approx(
        fused - doc["metrics"][best]["accuracy"]
    )
    cm = np.asarray(doc["imbalance"]["confusion_matrix"]["counts"])
    assert cm.sum() == len(labels) and np.trace(cm) == round(fused * len(labels))


def test_noise_at_sigma0_reproduces_the_branch_and_grows_with_sigma(checkpoints):
    opened = open_checkpoint(checkpoints["igm"])
    evaluated = evaluate_opened(opened)
    corruption = build_corruption(opened.model, opened.preset, opened.data, "fou", 256, 0)
    train_fou = np.asarray(opened.data.split("train").inputs["fou"], dtype=np.float64)
    assert corruption.std.numpy() == pytest.approx(train_fou.std(0), rel=1e-5, abs=1e-6)  # per feature

    def run(sigma):
        with eval_mode(opened.model):
            return corrupted_output(
                opened.model, opened.batches, "fou", 256, Corrupter(corruption, sigma, 0, "cpu"), False
            )

    assert torch.equal(run(0.0), evaluated.outputs.logits["fou"])
    moved = [float((run(s) - evaluated.outputs.logits["fou"]).abs().mean()) for s in (0.1, 0.5, 1.0)]
    assert 0 < moved[0] < moved[1] < moved[2]


def test_several_checkpoints_one_json_and_the_pngs(checkpoints, tmp_path):
    runs_dir = str(Path(checkpoints["igm"]).parents[1])  # a --runs-dir holding one run: that run's best
    paths = [runs_dir, checkpoints["dgl"]]
    result = CliRunner().invoke(app, ["eval", *paths, "--robustness", "--out", "cmp", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [(d["name"], d["method"]) for d in doc["checkpoints"]] == [
        (runs_dir, "igm"),
        (checkpoints["dgl"].removesuffix(".safetensors"), "dgl"),
    ]
    assert json.loads((tmp_path / "cmp/eval.json").read_text()) == doc
    for png in ("robustness.png", "confusion.png"):
        with Image.open(tmp_path / "cmp" / png) as image:
            assert image.format == "PNG" and image.size[0] > 800
    human = CliRunner().invoke(app, ["eval", checkpoints["igm3"], "--robustness"])
    assert human.exit_code == 0 and "zer" in human.stderr and "drop@0.5" in human.stderr
    assert (tmp_path / f"robustness-{Path(checkpoints['igm3']).parent.name}-best/robustness.png").is_file()


def test_a_bad_checkpoint_among_several_exits_3_with_one_line(checkpoints, tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    for bad in ("notes.txt", "missing.safetensors"):
        result = CliRunner().invoke(app, ["eval", checkpoints["igm"], bad, "--robustness"])
        assert result.exit_code == 3
        assert len(result.stderr.strip().splitlines()) == 1 and bad in result.stderr
        assert "Traceback" not in result.stderr
    two = tmp_path / "two"
    for name in ("a", "b"):
        shutil.copytree(Path(checkpoints["igm"]).parent, two / name)
    result = CliRunner().invoke(app, ["eval", str(two)])
    assert result.exit_code == 2 and "holds 2 runs (a, b)" in result.stderr
