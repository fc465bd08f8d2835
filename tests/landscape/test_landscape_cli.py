"""`igm landscape` end to end on tiny trained checkpoints: eval parity of the centre, outputs,
resuming an interrupted grid, refusing to mix configurations, exit codes."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

import igm_cli.landscape.runner as runner_module
from igm_cli.cli import app
from igm_cli.landscape import LandscapeSpec, compute_landscape

runner = CliRunner()
FAST = ["--grid", "5", "--split", "val"]


def landscape(*args: str):
    return runner.invoke(app, ["landscape", *args])


@pytest.mark.parametrize("modality", ["fused", "kar"])
def test_the_centre_is_the_loss_igm_eval_reports(tiny_runs, modality):
    ckpt = str(tiny_runs["a"])
    evaluated = json.loads(runner.invoke(app, ["eval", ckpt, "--split", "val", "--json"]).stdout)
    result = landscape(ckpt, *FAST, "--batches", "0", "--dims", "1", "--modality", modality, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    (row,) = doc["checkpoints"]
    assert doc["samples"] == evaluated["samples"] == 400
    assert row["centre"]["loss"] == pytest.approx(evaluated["metrics"][modality]["loss"], rel=1e-6)
    assert row["centre"]["accuracy"] == pytest.approx(evaluated["metrics"][modality]["accuracy"])
    # on an odd grid the centre is also a grid point with the same value
    surfaces = load_file(doc["files"]["surfaces"])
    assert surfaces["loss.0"][2] == pytest.approx(row["centre"]["loss"], rel=1e-6)


def test_two_checkpoints_side_by_side(tiny_runs, tmp_path):
    result = landscape(str(tiny_runs["a"]), str(tiny_runs["b"]), *FAST, "--batches", "1", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    (out,) = tmp_path.glob("landscape-mfeat-*-fused")  # default: landscape-<run>-<modality> in the cwd
    assert {p.name for p in out.iterdir()} == {
        "landscape.json",
        "surfaces.safetensors",
        "contour.png",
        "surface.png",
    }
    assert json.loads((out / "landscape.json").read_text())["flattest"] == doc["flattest"]
    for name in ("contour.png", "surface.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = [r["name"] for r in doc["checkpoints"]]
    assert doc["flattest"]["by_rise"] in names and doc["flattest"]["by_hessian"] in names
    assert doc["samples"] == 256 and doc["axes"]["alpha"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    for row in doc["checkpoints"]:
        assert row["hessian_top_eigenvalue"] > 0 and row["max_rise_within_r"] >= row["mean_rise_within_r"]
        assert abs(row["direction_cosine"]) < 0.1  # independent directions
    surfaces = load_file(str(out / "surfaces.safetensors"))
    assert surfaces["loss.0"].shape == (5, 5) and surfaces["done.1"].all()
    assert not np.array_equal(surfaces["loss.0"], surfaces["loss.1"])


def interrupt_after(points: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the grid raise KeyboardInterrupt (as Ctrl-C does) after `points` points."""
    real = runner_module.evaluate_grid
    count = {"n": 0}

    def evaluate_grid(objective, perturbation, axes, surface, on_point=None):
        def tick():
            on_point()
            count["n"] += 1
            if count["n"] == points:
                raise KeyboardInterrupt

        real(objective, perturbation, axes, surface, tick)

    monkeypatch.setattr(runner_module, "evaluate_grid", evaluate_grid)


def test_an_interrupted_grid_resumes_where_it_stopped(tiny_runs, tmp_path):
    args = [str(tiny_runs["a"]), str(tiny_runs["b"]), *FAST, "--batches", "1", "--out", "cut"]
    with pytest.MonkeyPatch.context() as patch:  # not the fixture: its undo() would leave tmp_path
        interrupt_after(31, patch)  # the whole first grid (25) and 6 points of the second
        stopped = landscape(*args)
    assert stopped.exit_code == 130
    assert "rerun the same command" in stopped.stderr
    assert not (tmp_path / "cut" / "landscape.json").exists()
    partial = load_file(str(tmp_path / "cut" / "surfaces.safetensors"))
    assert (partial["done.0"].sum(), partial["done.1"].sum()) == (25, 6)
    resumed = landscape(*args, "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_points"] == 31
    whole = compute_landscape(
        [tiny_runs["a"], tiny_runs["b"]], LandscapeSpec("val", grid=5, batches=1), out=tmp_path / "whole"
    )
    assert whole["resumed_points"] == 0
    a, b = load_file(str(tmp_path / "cut" / "surfaces.safetensors")), load_file(whole["files"]["surfaces"])
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_different_configuration_in_out_is_refused(tiny_runs, tmp_path):
    ckpt = str(tiny_runs["a"])
    assert landscape(ckpt, *FAST, "--dims", "1", "--batches", "1", "--out", "ls").exit_code == 0
    again = landscape(ckpt, "--grid", "7", "--split", "val", "--dims", "1", "--batches", "1", "--out", "ls")
    assert again.exit_code == 2
    assert "ls holds a different landscape (grid: 5 there, 7 here)" in again.stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert landscape(ckpt, *FAST, "--out", "other").exit_code == 2
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_branch_can_be_compared_across_architectures_but_the_fused_model_cannot(tiny_runs):
    a, kar_only = str(tiny_runs["a"]), str(tiny_runs["kar_only"])
    fused = landscape(a, kar_only, *FAST)
    assert fused.exit_code == 2
    assert "different architectures" in fused.stderr and "Traceback" not in fused.stderr
    branch = landscape(a, kar_only, *FAST, "--dims", "1", "--modality", "kar", "--json")
    assert branch.exit_code == 0, branch.stderr
    assert [r["method"] for r in json.loads(branch.stdout)["checkpoints"]] == ["igm", "unimodal"]
    missing = landscape(a, kar_only, *FAST, "--modality", "fou")
    assert missing.exit_code == 2 and "not a branch of" in missing.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.safetensors"], 3, "checkpoint not found"),
        (["A", "--modality", "audio"], 2, "--modality audio: not a branch"),
        (["A", "--split", "dev"], 2, "Invalid value for '--split'"),
        (["A", "--dims", "3"], 2, "--dims must be 1 or 2"),
        (["A", "--grid", "2"], 2, "--grid must be"),
        (["A", "--span", "0"], 2, "--span must be positive"),
    ],
)
def test_errors_are_one_line_with_their_exit_code(tiny_runs, args, code, message):
    args = [str(tiny_runs["a"]) if a == "A" else a for a in args]
    result = landscape(*args)
    assert result.exit_code == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]
    assert result.stdout == ""
