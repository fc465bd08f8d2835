"""Tiny runs through the CLI and the library: artifacts, eval parity, exact resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from typer.testing import CliRunner

from igm_cli.checkpoint import load_checkpoint
from igm_cli.cli import app
from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from tests.helpers import TINY_SETS, set_args

runner = CliRunner()


def only_run(runs: Path) -> Path:
    (run,) = list(runs.iterdir())
    return run


def model_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).group("model")


def test_train_writes_the_run_contract_and_eval_agrees(tmp_path):
    result = runner.invoke(app, ["train", "--json", "--runs-dir", "runs", *set_args(TINY_SETS)])
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)
    run = only_run(tmp_path / "runs")
    assert run.name.startswith("mfeat-")
    assert {p.name for p in run.iterdir()} == {
        "config.yaml",
        "metrics.jsonl",
        "results.json",
        "best.safetensors",
        "last.safetensors",
        "run.json",  # where the preset came from, the overrides, the logger (igm runs reads it)
    }
    # config.yaml is the resolved preset
    assert yaml.safe_load((run / "config.yaml").read_text())["stages"]["epochs"] == [1, 1]
    # metrics.jsonl: one line per epoch (2) and per stage (2)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["epoch", "stage", "epoch", "stage"]
    # stage 1 (kar) trains under T of fou, on all three head layers
    assert set(records[3]["gm_removed_share"]) == {"head.0", "head.2", "head.3"}
    assert records[1]["gm_removed_share"] == {}  # stage 0: T = I
    # checkpoint keys and metadata
    with safe_open(str(run / "best.safetensors"), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    for modality in ("fou", "kar"):
        for layer in ("head.0", "head.2", "head.3"):
            assert f"gm.T.{modality}.{layer}" in keys and f"gm.cov.{modality}.{layer}" in keys
    assert "model.branches.fou.head.0.weight" in keys
    assert not any(k.startswith("optim.") for k in keys)
    assert json.loads(meta["preset"])["name"] == "mfeat"
    assert set(json.loads(meta["state"])) >= {"stage", "epoch", "step", "best_metric"}
    # the final last.safetensors stands at a stage boundary: RNG, but no optimizer state to carry over
    last = load_checkpoint(run / "last.safetensors")
    assert "rng.cpu" in last.tensors and last.extra["optimizer"] is None
    assert not any(k.startswith("optim.") for k in last.tensors)
    # results show every branch beside the fused model
    assert set(results["test"]) == {"fou", "kar", "fused"}
    # igm eval on best.safetensors reproduces the test metrics exactly
    evaluated = runner.invoke(app, ["eval", str(run / "best.safetensors"), "--json"])
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["metrics"] == results["test"]
    val = json.loads(runner.invoke(app, ["eval", str(run), "--split", "val", "--json"]).stdout)
    assert val["metrics"]["fused"]["macro_f1"] == pytest.approx(results["selection"]["value"])


def test_entropy_fusion_at_eval_time(tmp_path):
    assert runner.invoke(app, ["train", "-q", *set_args(TINY_SETS)]).exit_code == 0
    run = only_run(tmp_path / "runs")
    mean = json.loads(runner.invoke(app, ["eval", str(run), "--json"]).stdout)
    entropy = json.loads(runner.invoke(app, ["eval", str(run), "--fusion", "entropy", "--json"]).stdout)
    assert entropy["fusion"] == "entropy"
    assert entropy["metrics"]["fou"] == mean["metrics"]["fou"]
    assert entropy["metrics"]["fused"]["loss"] != mean["metrics"]["fused"]["loss"]


@pytest.mark.parametrize(
    ("sets", "branches"),
    [
        (["method=joint"], {"fou", "kar", "fused"}),
        (["method=joint", "baseline.joint_loss=sum"], {"fou", "kar", "fused"}),
        (["method=unimodal", "baseline.modality=kar"], {"kar", "fused"}),
        (["sam.rho=0", "gm.enabled=false", "fusion=entropy", "selection=map"], {"fou", "kar", "fused"}),
    ],
)
def test_baselines_and_ablations_run_in_the_same_pipeline(tmp_path, sets, branches):
    result = runner.invoke(app, ["train", "--json", *set_args(TINY_SETS + sets)])
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)
    assert set(results["test"]) == branches
    if "gm.enabled=false" in sets or "method=joint" in sets:
        assert all(not s["T_trace_ratio"] or not any(s["T_trace_ratio"].values()) for s in results["stages"])


def interrupt_at(step: int):
    def on_event(kind, payload):
        if kind == "step" and payload["batch"] == step:
            raise KeyboardInterrupt

    return on_event


def ctrl_c_at(kind: str, **where):
    """A real SIGINT (deferred by the trainer to its next safe point) at the first matching event."""
    fired = []

    def on_event(event, payload):
        if event == kind and not fired and all(payload.get(k) == v for k, v in where.items()):
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    return on_event


RESUME_SETS = [*TINY_SETS, "stages.epochs=[2,1,1]", "modalities.fou.encoder.dropout=0.2"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return train(resolve_preset("mfeat", RESUME_SETS), runs_dir=tmp_path_factory.mktemp("whole"))


# Every kind of place a run can stop: inside an epoch, at an epoch end inside a stage,
# at each stage boundary (the checkpoint then belongs to the next stage, whose optimizer is
# fresh), and at the first step of a stage.
STOPS = {
    "mid-epoch": (interrupt_at(37), {"stage": 0, "epoch": 0, "batch": 37}),
    "epoch-end": (ctrl_c_at("epoch_end", stage=0, epoch=0), {"stage": 0, "epoch": 1, "batch": 0}),
    "stage-0-end": (ctrl_c_at("stage_end", stage=0), {"stage": 1, "epoch": 0, "batch": 0}),
    "stage-1-end": (ctrl_c_at("stage_end", stage=1), {"stage": 2, "epoch": 0, "batch": 0}),
    "stage-1-first-step": (ctrl_c_at("step", stage=1, batch=1), {"stage": 1, "epoch": 0, "batch": 1}),
    "stage-2-first-step": (ctrl_c_at("step", stage=2, batch=1), {"stage": 2, "epoch": 0, "batch": 1}),
}


@pytest.mark.parametrize("where", list(STOPS))
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, uninterrupted, where):
    on_event, expected = STOPS[where]
    whole = uninterrupted
    preset = resolve_preset("mfeat", RESUME_SETS)
    with pytest.raises(KeyboardInterrupt):
        train(preset, runs_dir=tmp_path / "cut", on_event=on_event)
    run = only_run(tmp_path / "cut")
    assert not (run / "results.json").exists()
    stopped = load_checkpoint(run / "last.safetensors").state
    assert {k: stopped[k] for k in expected} == expected
    resumed = train(None, resume=str(run), runs_dir=tmp_path / "cut")
    a = model_tensors(Path(whole["run_dir"]) / "last.safetensors")
    b = model_tensors(run / "last.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == whole["test"]
    ta = load_checkpoint(Path(whole["run_dir"]) / "best.safetensors").group("gm")
    tb = load_checkpoint(run / "best.safetensors").group("gm")
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_resume_auto_and_finished_run(tmp_path):
    preset = resolve_preset("mfeat", TINY_SETS)
    with pytest.raises(KeyboardInterrupt):
        train(preset, runs_dir=tmp_path / "runs", on_event=interrupt_at(5))
    result = runner.invoke(app, ["train", "--resume", "auto", "--json", "-q"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["epochs"] == 2
    # idempotent: the newest run finished, so its results are printed and nothing trains
    again = runner.invoke(app, ["train", "--resume", "auto", "--json"])
    assert again.exit_code == 0
    assert "already finished" in again.stderr
    assert json.loads(again.stdout) == json.loads(result.stdout)
    (run,) = (tmp_path / "runs").iterdir()
    finished = runner.invoke(app, ["train", "--resume", str(run)])
    assert finished.exit_code == 2
    assert "already finished" in finished.stderr


def test_sigint_through_the_cli_exits_130_and_resumes_exactly(tmp_path):
    sets = [*TINY_SETS, "stages.epochs=[15,15]"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "igm_cli", "train", "-q", *set_args(sets)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        metrics = list((tmp_path / "runs").glob("*/metrics.jsonl"))
        if metrics and metrics[0].read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert "interrupted" in err.decode()
    run = only_run(tmp_path / "runs")
    assert (run / "last.safetensors").is_file() and not (run / "results.json").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "igm_cli", "train", "-q", "--resume", str(run)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    # the uninterrupted reference runs the same way (a subprocess: same thread count)
    whole = subprocess.run(
        [*cmd, "--runs-dir", "whole"], cwd=tmp_path, env=env, capture_output=True, timeout=300
    )
    assert whole.returncode == 0, whole.stderr.decode()
    a = model_tensors(only_run(tmp_path / "whole") / "last.safetensors")
    b = model_tensors(run / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
