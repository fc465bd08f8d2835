"""`igm runs`: finished, resumable, failed, running and unreadable runs; overrides; --where --sort --json."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from igm_cli.cli import app
from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from igm_cli.runs import RunLock
from tests.helpers import TINY_SETS, set_args

runner = CliRunner()


def tiny_overrides(**extra) -> dict:
    """What run.json should hold, computed from the --set strings themselves."""
    expected = dict(extra)
    for item in TINY_SETS:
        key, _, value = item.partition("=")
        expected[key] = yaml.safe_load(value)
    return expected


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """A finished joint run, an interrupted IGM run, a diverged one, and two unreadable directories."""
    root = tmp_path_factory.mktemp("listing")
    runs = root / "runs"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        finished = runner.invoke(
            app,
            ["train", "-q", "--method", "joint", "--seed", "3", *set_args(TINY_SETS), "--runs-dir", "runs"],
        )
        assert finished.exit_code == 0, finished.stderr
        diverged = runner.invoke(
            app,
            ["train", "-q", *set_args([*TINY_SETS, "optimizer.lr=1e38", "sam.rho=0"]), "--runs-dir", "runs"],
        )
        assert diverged.exit_code == 4, diverged.stderr
    finally:
        os.chdir(cwd)

    def stop_in_second_stage(kind, payload):
        if kind == "step" and payload["stage"] == 1 and payload["batch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(resolve_preset("mfeat", TINY_SETS), runs_dir=runs, on_event=stop_in_second_stage)
    (runs / "notes").mkdir()  # not a run
    broken = runs / "mfeat-20000101-000000"
    broken.mkdir()
    (broken / "config.yaml").write_text("name: [unclosed\n")
    return runs


def listing(runs: Path, *args: str) -> list[dict]:
    result = runner.invoke(app, ["runs", str(runs), "--json", *args])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def by_status(rows: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for row in rows:
        found.setdefault(row["status"], []).append(row)
    return found


def test_a_finished_an_interrupted_and_a_failed_run_show_three_statuses(runs_dir):
    rows = by_status(listing(runs_dir))
    assert sorted(rows) == ["failed", "finished", "resumable", "unreadable"]
    (finished,), (resumable,), (failed,) = rows["finished"], rows["resumable"], rows["failed"]
    assert finished["method"] == "joint" and resumable["method"] == "igm"
    assert "training diverged" in failed["note"]
    assert json.loads((Path(failed["path"]) / "failed.json").read_text())["exit_code"] == 4
    notes = {r["name"]: r["note"] for r in rows["unreadable"]}
    assert (
        notes
        == {
            "notes": "not a run directory (no config.yaml)",
            "mfeat-20000101-000000": notes["mfeat-20000101-000000"],
        }
        and "config.yaml: unreadable" in notes["mfeat-20000101-000000"]
    )

    human = runner.invoke(app, ["runs", str(runs_dir)])
    assert human.exit_code == 0 and human.stdout == ""
    for word in ("finished", "resumable", "failed", "unreadable", finished["name"], "training diverged"):
        assert word in human.stderr


def test_the_row_of_a_finished_run_is_its_results_json(runs_dir):
    (row,) = listing(runs_dir, "--where", "status=finished")
    results = json.loads((Path(row["path"]) / "results.json").read_text())
    assert row["epoch"] == results["selection"]["epoch"] and row["epochs"] == results["epochs"]
    assert (row["val"], row["test"]) == (
        results["val"]["fused"]["accuracy"],
        results["test"]["fused"]["accuracy"],
    )
    assert row["branches"] == {
        m: {"val": results["val"][m]["accuracy"], "test": results["test"][m]["accuracy"]}
        for m in ("fou", "kar")
    }
    assert row["seconds"] == results["seconds"]
    assert row["overrides"] == tiny_overrides(method="joint", seed=3) and row["overrides_from"] == "recorded"


def test_an_unfinished_run_reports_its_best_epoch_so_far(runs_dir):
    (row,) = listing(runs_dir, "--where", "status=resumable")
    lines = (Path(row["path"]) / "metrics.jsonl").read_text().splitlines()
    best = [r for r in map(json.loads, lines) if r["kind"] == "epoch" and r["best"]][-1]
    assert (row["epoch"], row["val"], row["test"]) == (
        best["epochs_done"],
        best["val"]["fused"]["accuracy"],
        None,
    )
    assert row["branches"]["kar"] == {"val": best["val"]["kar"]["accuracy"], "test": None}
    assert row["note"] == f"igm train --resume {row['path']}"


def test_where_filters_on_columns_overrides_and_config(runs_dir):
    names = lambda *args: [r["name"] for r in listing(runs_dir, *args)]  # noqa: E731
    rows = {r["status"]: r["name"] for r in listing(runs_dir)}
    assert names("--where", "method=joint") == [rows["finished"]]
    assert names("--where", "method=igm") == sorted([rows["resumable"], rows["failed"]])
    assert names("--where", "method=igm", "--where", "status=failed") == [rows["failed"]]
    assert names("--where", "overrides.seed=3") == [rows["finished"]]
    assert names("--where", "config.optimizer.lr=1e38") == [rows["failed"]]  # YAML values: 1e38 == 1e+38
    assert names("--where", "config.sam.rho=0") == [rows["failed"]]  # 0 matches 0.0
    assert names("--where", "method=mla") == []


def test_sort_ascending_descending_and_unknown_values_last(runs_dir):
    rows = listing(runs_dir, "--sort", "-val")
    values = [r["val"] for r in rows]
    known = [v for v in values if v is not None]
    assert len(known) == 2 and known == sorted(known, reverse=True) and values[: len(known)] == known
    assert [r["val"] for r in listing(runs_dir, "--sort", "val")][:2] == sorted(known)
    assert [r["name"] for r in listing(runs_dir)] == sorted(r["name"] for r in rows)  # default: by name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sort", "accuracy"], "--sort: unknown key 'accuracy'"),
        (["--where", "method"], "--where 'method': expected key=value"),
        (["--where", "colour=red"], "--where: unknown key 'colour'"),
    ],
)
def test_bad_keys_are_one_line_and_exit_2(runs_dir, args, message):
    result = runner.invoke(app, ["runs", str(runs_dir), *args])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.strip().count("\n") == 0


def test_a_missing_directory_is_exit_2_and_an_empty_one_lists_nothing(tmp_path):
    result = runner.invoke(app, ["runs", str(tmp_path / "nowhere"), "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["error"]["kind"] == "usage"
    (tmp_path / "empty").mkdir()
    assert listing(tmp_path / "empty") == []
    assert "no runs in" in runner.invoke(app, ["runs", str(tmp_path / "empty")]).stderr


def test_running_while_the_lock_is_held_and_a_dead_holder_is_named(runs_dir, tmp_path):
    (row,) = listing(runs_dir, "--where", "status=resumable")
    run = tmp_path / "runs" / row["name"]
    shutil.copytree(row["path"], run)
    with RunLock(run):
        (held,) = listing(run.parent)
        assert (
            held["status"] == "running"
            and held["note"] == f"pid {os.getpid()} on host {socket.gethostname()}"
        )
    (run / "lock").write_text(f"pid {dead_pid()} on host {socket.gethostname()}\n")  # a kill -9 leaves this
    (stale,) = listing(run.parent)
    assert stale["status"] == "resumable" and stale["note"].startswith("killed: pid")
    (single,) = listing(run)  # DIR may be a run directory itself
    assert single["name"] == run.name
    (run / "lock").unlink()
    for name in ("last.safetensors", "best.safetensors"):  # as a kill in the first epoch leaves it
        (run / name).unlink()
    (empty,) = listing(run)
    assert (empty["status"], empty["note"], empty["epoch"]) == ("empty", "no checkpoint yet", 1)


def dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_runs_without_run_json_get_overrides_from_their_config(runs_dir, tmp_path):
    (row,) = listing(runs_dir, "--where", "status=finished")
    old = tmp_path / "runs" / row["name"]
    shutil.copytree(row["path"], old)
    (old / "run.json").unlink()  # as runs trained before run.json existed
    (listed,) = listing(old.parent)
    assert listed["overrides"] == tiny_overrides(method="joint", seed=3)
    assert listed["overrides_from"] == "config.yaml vs shipped mfeat"
    config = yaml.safe_load((old / "config.yaml").read_text())
    (old / "config.yaml").write_text(yaml.safe_dump({**config, "name": "my-own"}))
    (unknown,) = listing(old.parent)
    assert (unknown["overrides"], unknown["overrides_from"]) == (None, "unknown")


def test_a_set_equal_to_the_preset_is_not_an_override(tmp_path):
    tau = resolve_preset("mfeat").gm.tau
    result = runner.invoke(
        app, ["train", "-q", *set_args([*TINY_SETS, f"gm.tau={tau}", "sam.rho=0.01"]), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    info = json.loads((Path(json.loads(result.stdout)["run_dir"]) / "run.json").read_text())
    assert info["overrides"] == tiny_overrides(**{"sam.rho": 0.01}) and info["source"] == "mfeat"
