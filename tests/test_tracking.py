"""`--logger tensorboard`: event files TensorBoard's own reader understands, resume, absence."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from igm_cli.cli import app
from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from igm_cli.tracking import TensorBoardLogger
from tests.helpers import TINY_SETS, set_args

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is not installed (pip install -e '.[dev]' installs it; CI does)",
)


def read_events(log_dir: Path):
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


# ---------------------------------------------------------------- a hand-made record (report's format)

EDGES = [-1.0, -0.5, 0.0, 0.5, 0.9, 1.0]  # K = 5 bins
STAGE = {
    "kind": "stage",
    "stage": 1,
    "active": ["kar"],
    "source": "fou",
    "gm_removed_share": {"head.0": 0.25},
    "T_trace_ratio": {"kar": {"head.0": 0.75}},
    "gm_layers": [{"layer": "head.0", "T_of": "fou.head.0", "T_size": 8, "removed_share": 0.25}],
    "grad_cos_hist": {
        "edges": EDGES,
        "counts": {
            "kar.head.0": [0, 0, 3, 5, 12],
            "kar.head.2": [0, 0, 0, 0, 0],
            "kar.head.3": [1, 0, 0, 0, 0],
        },
    },
}
EPOCH = {
    "kind": "epoch",
    "stage": 1,
    "epoch": 0,
    "epochs_done": 7,
    "train_loss": 0.5,
    "lr": 0.01,
    "val": {"fused": {"accuracy": 0.8, "loss": 0.6}, "kar": {"accuracy": 0.7}},
    "sam_realized": None,
    "best": True,
}


def test_stage_record_histograms_and_scalars_read_back_with_tensorboard(tmp_path):
    logger = TensorBoardLogger(tmp_path / "tb")
    logger.log(EPOCH)
    logger.log(STAGE)
    logger.close()
    acc = read_events(tmp_path / "tb")
    assert scalars(acc, "train/loss") == [(7, 0.5)]
    assert scalars(acc, "val/kar/accuracy") == [(7, pytest.approx(0.7))]
    assert scalars(acc, "stage/gm_removed_share/head.0") == [(7, 0.25)]  # the stage's step: its last epoch
    assert scalars(acc, "stage/T_trace_ratio/kar/head.0") == [(7, 0.75)]
    assert scalars(acc, "stage/gm_layers/head.0/T_size") == [(7, 8.0)]  # a list of layers, keyed by layer
    assert scalars(acc, "stage/gm_layers/head.0/removed_share") == [(7, 0.25)]
    assert not [t for t in acc.Tags()["scalars"] if "T_of" in t]
    assert "stage/grad_cos_hist" not in " ".join(acc.Tags()["scalars"])
    assert sorted(acc.Tags()["histograms"]) == ["grad_cos/kar.head.0", "grad_cos/kar.head.3"]  # empty: none
    (event,) = acc.Histograms("grad_cos/kar.head.0")
    h = event.histogram_value
    assert event.step == 7
    assert (h.min, h.max, h.num) == (0.0, 1.0, 20)  # empty bins at the ends are left out
    assert list(h.bucket_limit) == [0.5, 0.9, 1.0] and list(h.bucket) == [3, 5, 12]
    centres = [0.25, 0.7, 0.95]
    assert h.sum == pytest.approx(3 * 0.25 + 5 * 0.7 + 12 * 0.95)
    assert h.sum_squares == pytest.approx(sum(c * x * x for c, x in zip([3, 5, 12], centres, strict=True)))
    (low,) = acc.Histograms("grad_cos/kar.head.3")
    assert (low.histogram_value.min, low.histogram_value.max) == (-1.0, -0.5)


# ---------------------------------------------------------------- igm train --logger tensorboard


def test_train_logs_every_epoch_and_stage_record_beside_metrics_jsonl(tmp_path):
    result = CliRunner().invoke(
        app, ["train", "-q", "--logger", "tensorboard", *set_args(TINY_SETS), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    run = Path(json.loads(result.stdout)["run_dir"])
    acc = read_events(run / "tensorboard")
    epochs = records(run, "epoch")
    assert scalars(acc, "train/loss") == [(r["epochs_done"], pytest.approx(r["train_loss"])) for r in epochs]
    assert scalars(acc, "train/lr") == [(r["epochs_done"], pytest.approx(r["lr"])) for r in epochs]
    for branch in ("fou", "kar", "fused"):
        for metric in ("accuracy", "macro_f1", "map", "loss"):
            expected = [(r["epochs_done"], pytest.approx(r["val"][branch][metric])) for r in epochs]
            assert scalars(acc, f"val/{branch}/{metric}") == expected
    last_stage = records(run, "stage")[-1]  # stage 1: T of fou removed a share of kar's head gradients
    for layer, share in last_stage["gm_removed_share"].items():
        assert scalars(acc, f"stage/gm_removed_share/{layer}") == [(2, pytest.approx(share))]
    stages = records(run, "stage")
    assert all("grad_cos_hist" in r for r in stages)  # written by IGM during training (report's format)
    for stage, step in zip(stages, (1, 2), strict=True):
        for layer, counts in stage["grad_cos_hist"]["counts"].items():
            (event,) = acc.Histograms(f"grad_cos/{layer}")
            kept = [i for i, c in enumerate(counts) if c]
            assert event.step == step and event.histogram_value.num == sum(counts)
            assert list(event.histogram_value.bucket) == counts[kept[0] : kept[-1] + 1]
    assert json.loads((run / "run.json").read_text())["logger"] == "tensorboard"


def test_resume_continues_the_event_files_without_showing_a_step_twice(tmp_path):
    preset = resolve_preset("mfeat", [*TINY_SETS, "stages.epochs=[2,1]"])

    def crash_after_logging_epoch_2(kind, payload):  # logged, but no checkpoint of it yet: a kill
        if kind == "epoch_end" and payload["epochs_done"] == 2:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        train(preset, runs_dir=tmp_path / "runs", logger="tensorboard", on_event=crash_after_logging_epoch_2)
    (run,) = (tmp_path / "runs").iterdir()
    assert [s for s, _ in scalars(read_events(run / "tensorboard"), "train/loss")] == [1, 2]
    assert json.loads((run / "failed.json").read_text())["error"] == "RuntimeError: killed"

    train(None, resume=str(run))  # no logger given: the run's own is kept
    assert not (run / "failed.json").exists()
    acc = read_events(run / "tensorboard")
    epochs = records(run, "epoch")
    assert [r["epochs_done"] for r in epochs] == [1, 2, 3]
    assert scalars(acc, "train/loss") == [(r["epochs_done"], pytest.approx(r["train_loss"])) for r in epochs]
    assert [s for s, _ in scalars(acc, "stage/T_trace_ratio/fou/head.0")] == [2]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # appended, not replaced


# ---------------------------------------------------------------- tensorboard absent


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_logger_without_tensorboard_is_one_line_exit_2_before_anything_runs(command, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now raises ImportError
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    args = [command, "--logger", "tensorboard", *set_args(TINY_SETS)]
    result = CliRunner().invoke(app, args + (["--grid", "gm.tau=0.1,0.2"] if command == "sweep" else []))
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "tensorboard package, which is not installed" in result.stderr
    assert "pip install 'igm-cli[tensorboard]'" in result.stderr
    assert not Path("runs").exists() and not Path("sweeps").exists()


def test_a_new_event_file_sorts_after_one_opened_in_the_same_second(tmp_path):
    import time

    (tmp_path / "tb").mkdir()
    earlier = tmp_path / "tb" / f"events.out.tfevents.{int(time.time()):010d}.zzzz.99999.9"  # sorts late
    earlier.write_bytes(b"")
    TensorBoardLogger(tmp_path / "tb").close()
    assert sorted(p.name for p in (tmp_path / "tb").iterdir())[0] == earlier.name


def test_sweep_trials_log_too_and_record_their_swept_values(tmp_path):
    args = ["sweep", "--grid", "gm.tau=0.1", "--logger", "tensorboard", *set_args(TINY_SETS), "--out", "sw"]
    result = CliRunner().invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.stderr
    (run,) = Path("sw/trials").glob("*/*/")
    assert [s for s, _ in scalars(read_events(run / "tensorboard"), "train/loss")] == [1, 2]
    info = json.loads((run / "run.json").read_text())
    assert (
        info["source"] == "mfeat" and info["overrides"]["gm.tau"] == 0.1 and info["logger"] == "tensorboard"
    )
    listed = CliRunner().invoke(app, ["runs", "sw", "--json"])  # a sweep directory lists its trials' runs
    (row,) = json.loads(listed.stdout)
    assert row["name"] == str(run.relative_to("sw")) and row["status"] == "finished"


def test_resuming_a_tensorboard_run_without_tensorboard_says_so_and_can_turn_it_off(tmp_path, monkeypatch):
    def stop_in_second_stage(kind, payload):
        if kind == "step" and payload["stage"] == 1 and payload["batch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(resolve_preset("mfeat", TINY_SETS), logger="tensorboard", on_event=stop_in_second_stage)
    (run,) = Path("runs").iterdir()
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    refused = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert refused.exit_code == 2 and refused.stderr.strip().count("\n") == 0
    assert f"{run} logs to TensorBoard (resume with --logger none to stop)" in refused.stderr
    assert not (run / "failed.json").exists() and not (run / "results.json").exists()
    finished = CliRunner().invoke(app, ["train", "-q", "--resume", str(run), "--logger", "none"])
    assert finished.exit_code == 0, finished.stderr
    assert (run / "results.json").is_file()
