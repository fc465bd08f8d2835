"""recipe: reference through the pipeline: switches listed, restart from best, T's pass, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import igm_cli.engine.trainer as trainer_module
from igm_cli.checkpoint import load_checkpoint
from igm_cli.cli import app
from igm_cli.engine.flat_projector import FlatProjector
from igm_cli.engine.projection import projection_matrix
from igm_cli.methods import get_method
from igm_cli.methods.igm_reference import degenerate_layers
from igm_cli.pipeline import open_data, train
from igm_cli.preset_schema import Reference
from igm_cli.presets import resolve_preset
from tests.helpers import TINY_SETS, set_args

runner = CliRunner()
REF = [*TINY_SETS, "recipe=reference"]
SWITCHES = {f"reference.{k}" for k in Reference.model_fields if k != "rho"}  # rho is a value, not a switch


def only_run(runs: Path) -> Path:
    (run,) = list(runs.iterdir())
    return run


def test_a_run_lists_every_switch_and_says_the_test_split_selected(tmp_path):
    result = runner.invoke(app, ["train", "--json", *set_args([*REF, "data.batch_size=7"])])
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)
    listed = {d["switch"] for d in results["deviations"]}
    assert listed >= SWITCHES
    assert all(d["what"] and "\n" not in d["what"] for d in results["deviations"])
    assert results["recipe"] == "reference" and results["selection"]["split"] == "test"
    assert results["sam_rho"] == 1e-10 and results["fusion"] == "mean"  # mfeat's reference.rho
    run = Path(results["run_dir"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    test_metrics = results["test"]["fused"]["macro_f1"]
    assert results["selection"]["value"] == pytest.approx(test_metrics)  # selected on test
    assert all("T_degenerate" in r for r in records if r["kind"] == "stage")
    train_rows = len(open_data(resolve_preset("mfeat", REF), None).split("train").labels)
    assert train_rows % 7 and results["steps"] == 2 * (train_rows // 7)  # drop_last: no short batch
    shown = runner.invoke(app, ["train", "--resume", "auto", *set_args([*REF, "data.batch_size=7"])])
    assert "the TEST split selected the model" in " ".join(shown.stderr.split())


def test_each_switch_turned_off_leaves_the_list():
    for key in SWITCHES:
        off = (
            "null"
            if key.endswith("eval_batch_size")
            else "0"
            if key.endswith(("alpha", "ratio"))
            else "false"
        )
        method = get_method(resolve_preset("mfeat", [*REF, f"{key}={off}"]))
        assert key not in {d["switch"] for d in method.deviations()}, key
    paper = resolve_preset("mfeat", TINY_SETS)
    assert not any(d["switch"].startswith("reference.") for d in get_method(paper).deviations())


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["reference.mixup_alpha=-1"], "reference.mixup_alpha"),
        (["reference.flat_ratio=2"], "reference.flat_ratio"),
        (["reference.eval_batch_size=0"], "reference.eval_batch_size"),
        (["reference.typo=1"], "reference.typo"),
        (["method=joint"], "recipe: reference"),
    ],
)
def test_a_bad_reference_value_is_a_one_line_preset_error(tmp_path, sets, message):
    result = runner.invoke(app, ["train", *set_args([*REF, *sets])])
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_each_stage_starts_from_the_best_checkpoint(tmp_path, monkeypatch):
    """The selection metric peaks in stage 0's first epoch: stage 1 must start from those weights."""
    scores = iter([0.9, 0.1, 0.2, 0.3, 0.95, 0.1])
    real = trainer_module.evaluate_model

    def scripted(*args, **kwargs):
        val = real(*args, **kwargs)
        val["fused"]["macro_f1"] = next(scores)
        return val

    monkeypatch.setattr(trainer_module, "evaluate_model", scripted)
    seen, model_of = {}, {}

    def on_event(kind, payload):
        if kind == "run_start":
            model_of["run"] = Path(payload["run_dir"])
        if kind == "stage_start" and payload["stage"] > 0:
            best = load_checkpoint(model_of["run"] / "best.safetensors").group("model")
            seen[payload["stage"]] = (best, {k: v.clone() for k, v in model_of["model"].state_dict().items()})
        if kind == "epoch_end":
            seen[("end", payload["epochs_done"])] = {
                k: v.clone() for k, v in model_of["model"].state_dict().items()
            }

    original_fit = trainer_module.Trainer.fit

    def fit(self, state, optimizer_state=None):
        model_of["model"] = self.model
        return original_fit(self, state, optimizer_state)

    monkeypatch.setattr(trainer_module.Trainer, "fit", fit)
    train(resolve_preset("mfeat", [*REF, "stages.epochs=[2,2,2]"]), on_event=on_event)
    for stage, best_epoch in ((1, 1), (2, 1)):  # stage 1 and 2 both start from epoch 1's weights
        best, start = seen[stage]
        assert best.keys() == start.keys()
        assert all(torch.equal(best[k], start[k]) for k in best)
        epoch_one = seen[("end", best_epoch)]
        assert all(torch.equal(start[k], epoch_one[k]) for k in start)
    last_of_stage0 = seen[("end", 2)]
    assert not all(torch.equal(seen[1][1][k], last_of_stage0[k]) for k in last_of_stage0)  # a real restart


class FakeBatches:
    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return 8

    def iterate(self, *args):
        return iter(self.batches)


def test_the_covariance_pass_sees_training_augmentation(monkeypatch):
    """Trainer._end_stage prepares T's batches with train=True for the recipe (eval-mode model)."""
    flags = []
    for recipe, expected in (("reference", True), ("paper", False)):
        method = get_method(resolve_preset("mfeat", [*TINY_SETS, f"recipe={recipe}"]))
        model = method.build_model({"fou": [76], "kar": [64]}, 10)
        branch = model.branch("fou")
        prepare = branch.prepare
        monkeypatch.setattr(branch, "prepare", lambda x, train, p=prepare: flags.append(train) or p(x, train))
        trainer = trainer_module.Trainer.__new__(trainer_module.Trainer)
        trainer.model, trainer.method = model, method
        trainer.config = trainer_module.TrainerConfig(4, 4, "mean", "macro_f1", 0)
        trainer.train_batches = FakeBatches([({"fou": torch.randn(8, 76), "kar": torch.randn(8, 64)}, None)])
        trainer.sink = type("S", (), {"log": lambda s, r: None})()
        trainer.on_event = lambda *a: None
        flags.clear()
        trainer._end_stage(method.schedule()[0], trainer_module.TrainState())
        assert flags == [expected], recipe


def test_unguarded_T_is_the_codes_formula_and_a_flat_spectrum_is_reported():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 7, generator=g, dtype=torch.float64).abs()
    R = z.T @ z  # rank 5 of 7: zero eigenvalues, as post-ReLU features give
    _, S, V = torch.svd(R, some=False)
    code = V @ torch.diag(torch.exp(-0.4 * (S - S.min()) / (S.max() - S.min()))) @ V.T
    assert torch.allclose(projection_matrix(R, 0.4, guards=False), code, atol=1e-12)
    flat = torch.eye(4, dtype=torch.float64) * 3
    assert torch.isnan(projection_matrix(flat, 0.4, guards=False)).all()  # λmax = λmin: 0/0, as the code
    guarded = projection_matrix(flat, 0.4)  # the paper recipe: a flat spectrum gives T = I
    assert torch.equal(guarded, torch.eye(4, dtype=torch.float64))
    projector = FlatProjector(0.4, guards=False)
    projector.cov = {"a": {"head.0": flat, "head.2": R}}
    projector.T = {"a": {k: projection_matrix(v, 0.4, guards=False) for k, v in projector.cov["a"].items()}}
    assert list(degenerate_layers(projector, "a")) == ["head.0"]


STOPS = {
    "mid-stage": ("step", {"stage": 1, "batch": 20}),
    "stage boundary": ("stage_end", {"stage": 0}),
}


@pytest.mark.parametrize("where", list(STOPS))
def test_resume_mid_stage_and_at_a_stage_boundary_equals_the_whole_run(tmp_path, where):
    import os
    import signal

    sets = [*REF, "stages.epochs=[2,1,1]", "reference.mixup_alpha=1"]
    whole = train(resolve_preset("mfeat", sets), runs_dir=tmp_path / "whole")
    kind, match = STOPS[where]
    fired = []

    def on_event(event, payload):
        if event == kind and not fired and all(payload.get(k) == v for k, v in match.items()):
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(resolve_preset("mfeat", sets), runs_dir=tmp_path / "cut", on_event=on_event)
    run = only_run(tmp_path / "cut")
    resumed = train(None, resume=str(run), runs_dir=tmp_path / "cut")
    a = load_checkpoint(Path(whole["run_dir"]) / "last.safetensors")
    b = load_checkpoint(run / "last.safetensors")
    for group in ("model", "gm"):
        ga, gb = a.group(group), b.group(group)
        assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga), group
    assert resumed["test"] == whole["test"]
    shares = [[s["code_sam_moved_share"] for s in r["stages"]] for r in (whole, resumed)]
    assert shares[0] == shares[1]  # the perturbation's count continues across the stop


def test_code_sam_off_hands_the_paper_sam_to_the_trainer_with_one_mixup_draw():
    """reference.code_sam=false: the Trainer's SamStep runs at sam.rho and both passes share a draw."""
    method = get_method(resolve_preset("mfeat", [*REF, "reference.code_sam=false", "sam.rho=0.05"]))
    assert method.trainer_sam_rho == 0.05 and method.sam_rho == 0.05
    model = method.build_model({"fou": [76], "kar": [64]}, 10)
    stage = method.schedule()[0]
    draws = []
    real = method.draw
    method.draw = lambda batch, device: draws.append(real(batch, device)) or draws[-1]
    (substep,) = method.substeps(model, stage, list(model.branch("fou").parameters()))
    x, y = {"fou": torch.randn(6, 76)}, torch.randint(0, 10, (6,))
    substep.gradients(x, y, False)
    first = substep.memo["draw"]
    substep.gradients(x, y, True)  # SAM's pass at θ + ε
    assert len(draws) == 1 and substep.memo["draw"] is first
