"""Every method trains, checkpoints, resumes bit-identically and evaluates through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from igm_cli.checkpoint import load_checkpoint
from igm_cli.cli import app
from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from tests.helpers import TINY_SETS, set_args

runner = CliRunner()

FAST = [*TINY_SETS, "data.batch_size=48"]  # 25 steps an epoch
METHOD_SETS = {
    "mla": ["method=mla", "baseline.epochs=2"],
    "dgl": ["method=dgl", "baseline.epochs=2", "optimizer.clip_norm=40", "sam.baseline_rho=0.05"],
    "mie": ["method=mie", "mie.covariance=centred", "fusion=entropy_logits"],
}


def stop_at(stage: int, epoch: int, batch: int):
    def on_event(kind, payload):
        if kind == "step" and (payload["stage"], payload["epoch"], payload["batch"]) == (stage, epoch, batch):
            raise KeyboardInterrupt

    return on_event


def weights(path: Path) -> dict[str, torch.Tensor]:
    checkpoint = load_checkpoint(path)
    return {k: v for k, v in checkpoint.tensors.items() if k.startswith(("model.", "gm.", "mla."))}


@pytest.mark.parametrize("method", list(METHOD_SETS))
def test_method_trains_resumes_exactly_and_evaluates(tmp_path, method):
    sets = [*FAST, *METHOD_SETS[method]]
    whole = runner.invoke(app, ["train", "--json", "-q", "--runs-dir", "whole", *set_args(sets)])
    assert whole.exit_code == 0, whole.stderr
    results = json.loads(whole.stdout)
    assert results["method"] == method
    assert set(results["test"]) == {"fou", "kar", "fused"}
    run = Path(results["run_dir"])
    evaluated = runner.invoke(app, ["eval", str(run / "best.safetensors"), "--json"])
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["metrics"] == results["test"]

    # cut inside the second epoch (mla/dgl: one stage; mie: the second stage), then resume
    where = (1, 0, 10) if method == "mie" else (0, 1, 10)
    with pytest.raises(KeyboardInterrupt):
        train(resolve_preset("mfeat", sets), runs_dir=tmp_path / "cut", on_event=stop_at(*where))
    (cut,) = (tmp_path / "cut").iterdir()
    assert load_checkpoint(cut / "last.safetensors").extra["optimizer"] is not None
    resumed = runner.invoke(app, ["train", "--resume", str(cut), "--json", "-q"])
    assert resumed.exit_code == 0, resumed.stderr
    a, b = weights(run / "last.safetensors"), weights(cut / "last.safetensors")
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads(resumed.stdout)["test"] == results["test"]
    # the gradient-cosine histogram (mla: cos(G, G Pᵀ); mie: cos(∇W, ∇W T)) continues exactly too
    hists = [[r.get("grad_cos_hist") for r in stage_records(d)] for d in (run, cut)]
    assert hists[0] == hists[1] and all(h is None for h in hists[0]) == (method == "dgl")
    # the finished run's last checkpoint stands at the end of its last stage: no optimizer state
    assert load_checkpoint(run / "last.safetensors").extra["optimizer"] is None


def stage_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "stage"]


def test_mla_released_writes_its_deviations(tmp_path):
    sets = [*FAST, "method=mla", "baseline.epochs=1", "mla.projection=released"]
    result = runner.invoke(app, ["train", "--json", "-q", *set_args(sets)])
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)
    mine = [d for d in results["deviations"] if d["switch"].startswith("mla.")]
    assert [d["switch"] for d in mine] == ["mla.projection=released"] * 2
    assert not any(d["switch"] in ("sam.rho", "gm.tau", "fusion") for d in results["deviations"])
    saved = json.loads((Path(results["run_dir"]) / "results.json").read_text())
    assert saved["deviations"] == results["deviations"]
    assert "grad_cos_hist" not in saved["stages"][0]  # no projection ran: no histogram


def test_shared_head_with_unequal_dims_exits_2_naming_the_field():
    sets = [*TINY_SETS, "method=mla", "modalities.kar.encoder.dim=4"]
    result = runner.invoke(app, ["train", *set_args(sets)])
    assert result.exit_code == 2
    assert "modalities.kar.encoder" in result.stderr and "same feature size" in result.stderr
    assert "Traceback" not in result.stderr


def test_baselines_show_their_sam_rho_which_defaults_to_plain(tmp_path):
    sets = [*FAST, "method=joint", "baseline.epochs=1"]
    result = runner.invoke(app, ["train", *set_args(sets)])
    assert result.exit_code == 0, result.stderr
    assert "joint · SAM ρ 0 ·" in result.stderr
    (run,) = Path("runs").iterdir()
    saved = json.loads((run / "results.json").read_text())
    assert saved["sam_rho"] == 0.0
    assert all(s["sam_realized"] is None for s in saved["stages"])  # no second pass ran
    assert all("grad_cos_hist" not in s for s in saved["stages"])  # joint modifies no gradient
