"""What a run records and shows: selection, LR schedule, T per stage, deviations, threads, displays."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

from igm_cli import console
from igm_cli.checkpoint import load_checkpoint
from igm_cli.deviations import deviations
from igm_cli.engine.flat_projector import FlatProjector
from igm_cli.engine.optim import learning_rate
from igm_cli.pipeline import RunSink, train
from igm_cli.presets import Schedule, resolve_preset
from igm_cli.sweep.summary import best_rows, verdict
from igm_cli.threads import SMALL_MODEL_PARAMS, choose_threads
from tests.helpers import TINY_SETS

# ---------------------------------------------------------------- selection (a mutation: keep the last)


def test_the_selected_checkpoint_holds_the_weights_of_the_selected_epoch_not_the_last(tmp_path, monkeypatch):
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    real_save = RunSink.save

    def save(self, kind, state, optimizer, extra=None):
        real_save(self, kind, state, optimizer, extra)
        if kind == "last":
            snapshots[state.epochs_done] = {k: v.clone() for k, v in self.model.state_dict().items()}

    monkeypatch.setattr(RunSink, "save", save)
    preset = resolve_preset("mfeat", [*TINY_SETS, "stages.epochs=[2,2]", "optimizer.lr=0.3", "seed=1"])
    results = train(preset, runs_dir=tmp_path / "runs")
    selected = results["selection"]["epoch"]
    assert selected != results["epochs"], "pick a seed whose best epoch is not the last"
    best = load_checkpoint(Path(results["run_dir"]) / "best.safetensors").group("model")
    assert all(torch.equal(best[k], snapshots[selected][k]) for k in best)
    assert not all(torch.equal(best[k], snapshots[results["epochs"]][k]) for k in best)
    from igm_cli.evaluation import evaluate_checkpoint

    assert evaluate_checkpoint(Path(results["run_dir"]) / "best.safetensors")["metrics"] == results["test"]


# ---------------------------------------------------------------- learning rate (a mutation: shift the decay)


@pytest.mark.parametrize(
    ("schedule", "epochs", "expected"),
    [
        ({"name": "constant"}, 3, [0.1, 0.1, 0.1]),
        ({"name": "step", "step_size": 2, "gamma": 0.1}, 5, [0.1, 0.1, 0.01, 0.01, 0.001]),
        ({"name": "step", "step_size": 1, "gamma": 0.5}, 3, [0.1, 0.05, 0.025]),
        ({"name": "cosine"}, 4, [0.1, 0.1 * (1 + math.sqrt(0.5)) / 2, 0.05, 0.1 * (1 - math.sqrt(0.5)) / 2]),
        ({"name": "constant", "first_epoch_factor": 2 / 3}, 3, [0.1 * 2 / 3, 0.1, 0.1]),
        ({"name": "step", "step_size": 1, "gamma": 0.5, "first_epoch_factor": 0.5}, 2, [0.05, 0.05]),
    ],
)
def test_learning_rate_against_hand_values(schedule, epochs, expected):
    got = [learning_rate(Schedule(**schedule), 0.1, e, epochs) for e in range(epochs)]
    assert got == pytest.approx(expected, rel=1e-12)


def test_the_trainer_sets_the_scheduled_lr_each_epoch_and_restarts_it_each_stage(tmp_path):
    sets = [
        *TINY_SETS,
        "stages.epochs=[3,2]",
        "schedule.name=step",
        "schedule.step_size=1",
        "schedule.gamma=0.5",
    ]
    results = train(resolve_preset("mfeat", sets), runs_dir=tmp_path / "runs")
    lines = (Path(results["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    lrs = [r["lr"] for r in map(json.loads, lines) if r["kind"] == "epoch"]
    assert lrs == pytest.approx([0.01, 0.005, 0.0025, 0.01, 0.005])


# ---------------------------------------------------------------- T at each stage boundary


def test_each_stage_trains_under_the_T_of_the_previous_modality_in_the_cycle(tmp_path, monkeypatch):
    calls = []
    real = FlatProjector.begin_stage

    def begin_stage(self, model, active, source):
        calls.append((active, source, sorted(self.T)))
        return real(self, model, active, source)

    monkeypatch.setattr(FlatProjector, "begin_stage", begin_stage)
    branch = "encoder: {name: mlp, hidden: [16], dim: 8}"
    three = ", ".join(f"{{name: {m}, {branch}}}" for m in ("fou", "kar", "zer"))
    sets = [
        *TINY_SETS,
        f"modalities=[{three}]",
        "stages.epochs=[1,1,1,1,1]",
    ]
    train(resolve_preset("mfeat", sets), runs_dir=tmp_path / "runs")
    # k = mod(j + m - 2, m) + 1: the previous modality; its T exists once it has trained
    assert calls == [
        ("fou", "zer", []),
        ("kar", "fou", ["fou"]),
        ("zer", "kar", ["fou", "kar"]),
        ("fou", "zer", ["fou", "kar", "zer"]),
        ("kar", "fou", ["fou", "kar", "zer"]),
    ]


# ---------------------------------------------------------------- deviations


def test_deviations_name_each_departure_from_the_paper():
    paperlike = resolve_preset(
        "mfeat", ["sam.rho=1e-10", "fusion=entropy", "schedule.name=step", "selection=macro_f1"]
    )
    assert deviations(paperlike) == []
    default = {d["switch"]: d["what"] for d in deviations(resolve_preset("mfeat"))}
    assert set(default) == {"sam.rho", "fusion", "schedule.name"}
    assert "0.05" in default["sam.rho"]
    ablation = {d["switch"] for d in deviations(resolve_preset("mfeat", ["gm.enabled=false", "sam.rho=0"]))}
    assert {"gm.enabled", "sam.rho"} <= ablation
    assert all(set(d) == {"switch", "what"} for d in deviations(resolve_preset("crema-d")))


def test_results_json_carries_the_deviations_and_the_threads(tmp_path):
    results = train(resolve_preset("mfeat", TINY_SETS), runs_dir=tmp_path / "runs")
    assert results["deviations"] == deviations(resolve_preset("mfeat", TINY_SETS))
    assert results["deviations"]
    assert results["threads"] == 1  # a model far below SMALL_MODEL_PARAMS
    config = yaml.safe_load((Path(results["run_dir"]) / "config.yaml").read_text())
    assert config["threads"] == 1
    from igm_cli.evaluation import evaluate_checkpoint

    try:
        assert evaluate_checkpoint(Path(results["run_dir"]), split="val", threads=2)["threads"] == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_thread_default_follows_the_model_size():
    assert choose_threads(None, SMALL_MODEL_PARAMS - 1) == 1
    assert choose_threads(None, SMALL_MODEL_PARAMS) >= 1
    assert choose_threads(3, 10) == 3


# ---------------------------------------------------------------- sweep selection and ties


def _row(setting: str, val: float, test: float) -> dict:
    stats = lambda v: {"accuracy": {"mean": v, "std": None, "n": 1}}  # noqa: E731
    return {
        "setting": setting,
        "labels": {"k": setting},
        "metrics": {"val": {"fused": stats(val)}, "test": {"fused": stats(test)}},
    }


def test_sweep_default_selects_on_validation_and_marks_ties():
    from igm_cli.sweep import DEFAULT_METRIC

    assert DEFAULT_METRIC.startswith("val.")
    rows = [_row("a", 0.9, 0.5), _row("b", 0.9, 0.99), _row("c", 0.8, 1.0)]
    best = best_rows(rows, ("val", "fused", "accuracy"))
    assert [r["setting"] for r in best] == ["a", "b"]
    assert verdict(rows, ("val", "fused", "accuracy")).startswith("tie: 2 settings")


# ---------------------------------------------------------------- displays


@pytest.fixture
def screen(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(console, "console", Console(file=out, width=80, force_terminal=False))
    return out


def test_stage_lines_and_table_say_no_gm_when_there_is_none(screen):
    display = console.TrainingDisplay()
    display.on_event(
        "stage_start", {"stage": 0, "active": ["fou", "kar"], "epochs": 1, "source": None, "paired": []}
    )
    display.on_event(
        "stage_start",
        {"stage": 1, "active": ["kar"], "epochs": 1, "source": "fou", "paired": [], "gm": False},
    )
    display.on_event(
        "stage_start", {"stage": 0, "active": ["fou"], "epochs": 1, "source": "kar", "paired": [], "gm": True}
    )
    lines = screen.getvalue().splitlines()
    assert lines[0].endswith("no GM") and "None" not in lines[0]
    assert lines[1].endswith("no GM")
    assert lines[2].endswith("T = I (no T of kar yet)")
    stages = [
        {"stage": 0, "active": ["fou"], "source": "kar", "gm_removed_share": {}, "T_trace_ratio": {}},
        {
            "stage": 1,
            "active": ["kar"],
            "source": "fou",
            "gm_removed_share": {"head.0": 0.1},
            "T_trace_ratio": {},
        },
        {"stage": 0, "active": ["fou", "kar"], "source": None, "gm_removed_share": {}, "T_trace_ratio": {}},
    ]
    screen.truncate(0)
    console.stage_table(stages)
    rows = [line for line in screen.getvalue().splitlines() if line.startswith("│")]
    assert "kar" not in rows[0].split("│")[3]  # stage 0: no T acted, so none is named
    assert "fou" in rows[1].split("│")[3]
    assert "None" not in screen.getvalue()


def test_landscape_numbers_and_eval_paths_are_never_cut_on_80_columns(screen):
    row = {
        "name": "a-very-long-checkpoint-name-from-a-run-directory/best.safetensors",
        "label": "igm",
        "centre": {"loss": 0.112345, "accuracy": 0.987654},
        "max_rise_within_r": 0.123456,
        "mean_rise_within_r": 0.0456789,
        "hessian_top_eigenvalue": 12.3456,
        "hessian": {"converged": True, "iterations": 20},
    }
    result = {
        "modality": "fused", "split": "train", "samples": 96, "dims": 2, "grid": 25, "span": 1.0,
        "radius": 0.1, "checkpoints": [row, {**row, "name": "b"}], "flattest": {"verdict": "a"},
        "files": {"json": "x.json", "surfaces": "x.safetensors", "contour": "c.png", "surface": "s.png"},
    }  # fmt: skip
    console.landscape_table(result)
    text = screen.getvalue()
    assert "…" not in text
    for number in ("0.1123", "0.9877", "0.1235", "0.0457", "12.35"):
        assert number in text
    screen.truncate(0)
    path = "runs/mfeat-20260101-000000/a-checkpoint-with-a-long-name/best.safetensors"
    metrics = {"fused": {"accuracy": 0.5, "macro_f1": 0.5, "map": 0.5, "loss": 1.0}}
    console.eval_table(
        {"checkpoint": path, "split": "test", "samples": 400, "fusion": "mean", "metrics": metrics}
    )
    assert path in screen.getvalue()


def test_progress_bars_show_an_eta(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(console, "console", Console(file=out, width=100, force_terminal=True))
    display = console.EventDisplay()
    display.start_progress("training", 10)
    display.advance(2.5)
    columns = [type(c).__name__ for c in display.progress.columns]
    display.progress.stop()
    assert "TimeRemainingColumn" in columns
    assert display.progress.tasks[0].completed == 2.5


def test_the_sweep_bar_moves_with_the_steps_of_running_trials(tmp_path, monkeypatch):
    from igm_cli.sweep import plan_sweep, run_sweep

    events = []
    plan = plan_sweep("mfeat", TINY_SETS, ["gm.tau=0.1,1"], [], None, 0, None)
    run_sweep(plan, tmp_path / "sw", on_event=lambda kind, payload: events.append((kind, payload)))
    kinds = [k for k, _ in events]
    assert kinds.count("trial_end") == 2
    first_end = kinds.index("trial_end")
    shares = [p["share"] for k, p in events[:first_end] if k == "trial_progress"]
    assert len(shares) > 10 and shares == sorted(shares) and shares[-1] == 1.0
    # the display adds up to one unit per trial: steps, then the rest at the trial's end
    out = io.StringIO()
    monkeypatch.setattr(console, "console", Console(file=out, width=100, force_terminal=True))
    display = console.SweepDisplay()
    for kind, payload in events:
        display.on_event(kind, payload)
    assert display.progress.tasks[0].completed == pytest.approx(2.0)
    display.progress.stop()
