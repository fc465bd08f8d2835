"""igm sweep: parsing and planning, running, resume after a kill, shards and collect, summary, plots."""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from igm_cli.cli import app
from igm_cli.sweep import plan_sweep
from igm_cli.sweep.grid import parse_grid, split_values
from igm_cli.sweep.plots import plot_summary
from igm_cli.sweep.runner import sigterm_as_interrupt
from igm_cli.sweep.summary import summarize
from tests.helpers import TINY_SETS, set_args

runner = CliRunner()
GRID_2X2 = ["--grid", "gm.tau=0.01,10", "--grid", "sam.rho=0,0.05", "--seeds", "0,1"]
METRICS = ("accuracy", "macro_f1", "map", "loss")


def sweep(*args: str, out: str = "sw"):
    return runner.invoke(app, ["sweep", "--out", out, *set_args(TINY_SETS), *args])


def trial_records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "trials").glob("*.json")}


# ---------------------------------------------------------------- parsing and planning


def test_values_are_yaml_and_commas_inside_brackets_do_not_split():
    assert split_values("[1,1],[2, 2],'a,b'") == ["[1,1]", "[2, 2]", "'a,b'"]
    assert parse_grid("gm.enabled=true,false") == ("gm.enabled", [True, False])
    plan = plan_sweep(grids=["sam.rho=0,1e-4", "stages.epochs=[1,1],[2,1]", "gm.enabled=false,true"])
    assert len(plan.settings) == 8 and len(plan.trials) == 8  # one seed: the preset's
    assert {s.values["sam.rho"] for s in plan.settings} == {0.0, 1e-4}  # '1e-4' resolved to a float
    assert [s.values["stages.epochs"] for s in plan.settings][:2] == [[1, 1], [1, 1]]
    assert {s.values["gm.enabled"] for s in plan.settings} == {False, True}
    assert plan.definition["grid"]["stages.epochs"] == [[1, 1], [2, 1]]
    assert all(t.preset()["seed"] == 42 for t in plan.trials)


def test_ids_are_stable_and_name_resolved_values():
    a = plan_sweep(grids=["gm.tau=1e-3,10"], seeds=[0, 1])
    b = plan_sweep(grids=["gm.tau=0.001,10.0"], seeds=[0, 1])
    assert [t.id for t in a.trials] == [t.id for t in b.trials]
    assert a.definition == b.definition


def test_the_union_of_all_shards_is_the_unsharded_trial_set():
    plan = plan_sweep(grids=["gm.tau=0.01,0.1,1", "sam.rho=0,0.05"], seeds=[0, 1, 2])
    everything = sorted(t.id for t in plan.trials)
    assert len(everything) == 18
    for n in (1, 2, 4, 7, 20):
        shards = [[t.id for t in plan.shard(i, n)] for i in range(n)]
        union = [tid for shard in shards for tid in shard]
        assert sorted(union) == everything and len(set(union)) == len(union)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_random_search_is_seeded_and_stays_in_range():
    ranges = ["gm.tau=1e-3:100:log", "stages.epochs.0=1:3"]
    a = plan_sweep(ranges=ranges, random_n=6, random_seed=7)
    b = plan_sweep(ranges=ranges, random_n=6, random_seed=7)
    c = plan_sweep(ranges=ranges, random_n=6, random_seed=8)
    assert [s.id for s in a.settings] == [s.id for s in b.settings] != [s.id for s in c.settings]
    for s in a.settings:
        assert 1e-3 <= s.values["gm.tau"] <= 100
        assert s.values["stages.epochs.0"] in (1, 2, 3)
    assert a.definition["random"]["seed"] == 7 and a.definition["random"]["n"] == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "gm.tua=0.1,1"], "gm.tua"),
        (["--grid", "gm.tau=0.1,-1"], "gm.tau"),
        (["--grid", "gm.tau"], "--grid"),
        (["--grid", "gm.tau=0.1", "--grid", "gm.tau=1"], "swept twice"),
        (["--grid", "gm.tau=10,10.0"], "same setting"),
        (["--grid", "seed=1,2"], "--seeds"),
        (["--set", "gm.tau=1", "--grid", "gm.tau=1,2"], "fixed"),
        (["--range", "gm.tau=1:0.1", "--random", "2"], "low < high"),
        (["--random", "3"], "--range"),
        (["--shard", "2/2"], "0-based"),
        (["--shard", "x"], "--shard"),
        (["--seeds", "0,0"], "repeated"),
        (["--metric", "test.fused.acc"], "--metric"),
        (["--metric", "test.nosuch.accuracy"], "nosuch"),
        (["--jobs", "0"], "--jobs"),
        (["--resume"], "--out"),
    ],
)
def test_bad_sweeps_fail_fast_with_exit_2_and_one_line(tmp_path, args, message):
    result = runner.invoke(app, ["sweep", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "sweeps").exists()  # nothing ran, nothing was written


# ---------------------------------------------------------------- running and summarizing


def test_grid_sweep_writes_runs_and_a_summary_that_matches_the_results(tmp_path):
    result = sweep(*GRID_2X2, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["trials"] == {"planned": 8, "in_scope": 8, "ok": 8, "failed": 0, "unfinished": 0}
    out = tmp_path / "sw"
    records = trial_records(out)
    assert len(records) == 8 and all(r["status"] == "ok" for r in records.values())
    # every trial is an ordinary run directory with its resolved config
    results = {}
    for tid, record in records.items():
        run = out / record["run_dir"]
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["gm"]["tau"] == record["values"]["gm.tau"] and config["seed"] == record["seed"]
        assert config["stages"]["epochs"] == [1, 1]  # the fixed --set
        results[tid] = json.loads((run / "results.json").read_text())
    # summary mean and std equal a direct computation from the runs' results.json
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rows"]) == 4
    for row in summary["rows"]:
        runs = [results[f"{row['setting']}-s{seed}"] for seed in (0, 1)]
        assert row["seeds_ok"] == [0, 1]
        for split in ("val", "test"):
            assert set(row["metrics"][split]) == {"fou", "kar", "fused"}
            for branch, metrics in row["metrics"][split].items():
                for metric in METRICS:
                    values = [r[split][branch][metric] for r in runs]
                    assert metrics[metric]["mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
                    assert metrics[metric]["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
    header, *lines = (out / "summary.csv").read_text().splitlines()
    assert header.startswith("setting,gm.tau,sam.rho,seeds_ok,seeds_failed,val.fou.accuracy.mean")
    assert "test.fused.accuracy.std" in header and len(lines) == 4
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --collect of the one directory re-summarizes it in place; the human table is on stderr
    again = runner.invoke(app, ["sweep", "--collect", str(out), "--metric", "val.kar.macro_f1"])
    assert again.exit_code == 0, again.stderr
    assert "mean ± std" in again.stderr and "gm.tau \\ sam.rho" in again.stderr and again.stdout == ""


def test_a_failing_trial_is_recorded_and_the_others_finish(tmp_path):
    result = sweep("--grid", "optimizer.lr=0.01,1e3", "--seeds", "0,1", "--jobs", "2", "--json")
    assert result.exit_code == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["trials"]["ok"] == 2 and report["trials"]["failed"] == 2
    for failure in report["failed"]:
        assert failure["values"] == {"optimizer.lr": 1000.0}
        assert failure["exit_code"] == 4 and "diverged" in failure["error"]
    rows = {row["labels"]["optimizer.lr"]: row for row in report["rows"]}
    assert rows["1000"]["seeds_failed"] == [0, 1] and rows["1000"]["metrics"]["test"] == {}
    assert rows["0.01"]["seeds_ok"] == [0, 1]
    records = trial_records(tmp_path / "sw").values()
    assert all(
        (tmp_path / "sw" / r["run_dir"] / "results.json").is_file() for r in records if r["status"] == "ok"
    )


def test_resume_after_killing_the_sweep_runs_only_what_was_missing(tmp_path):
    sets = [*TINY_SETS, "stages.epochs=[2,2]"]
    cmd = [sys.executable, "-m", "igm_cli", "sweep", "--out", "sw", "--grid", "gm.tau=0.01,0.1,1,10,100,1000"]
    cmd += set_args(sets)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # as conftest: one thread
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if any(r["status"] == "ok" for r in _records_now(tmp_path / "sw")):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert "--resume" in err.decode()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sw" / "trials").glob("*.json")}
    finished = [r["id"] for r in _records_now(tmp_path / "sw") if r["status"] == "ok"]
    assert 0 < len(finished) < 6
    assert json.loads((tmp_path / "sw" / "summary.json").read_text())["rows"]  # what finished is summarized
    resumed = subprocess.run([*cmd, "--resume", "--json"], cwd=tmp_path, env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()
    report = json.loads(resumed.stdout)
    assert report["ran"] == 6 - len(finished) and report["skipped"] == len(finished)
    records = trial_records(tmp_path / "sw")
    assert len(records) == 6 and all(r["status"] == "ok" for r in records.values())
    for tid in finished:  # untouched: not run again
        assert records[tid]["attempts"] == 1
        assert (tmp_path / "sw" / "trials" / f"{tid}.json").stat().st_mtime_ns == before[f"{tid}.json"]
    assert sum(r["attempts"] for r in records.values()) == 6 + (len(before) - len(finished))


def test_sigterm_stops_a_sweep_like_ctrl_c():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is previous


def _records_now(out: Path) -> list[dict]:
    records = []
    for path in (out / "trials").glob("*.json") if (out / "trials").is_dir() else []:
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    return records


def test_shards_run_apart_and_collect_merges_them(tmp_path):
    args = ["--grid", "gm.tau=0.01,1", "--seeds", "0,1"]
    for i in (0, 1):
        result = sweep(*args, "--shard", f"{i}/2", "--json", out=f"m{i}")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["trials"]["in_scope"] == 2
    shard_ids = [set(trial_records(tmp_path / f"m{i}")) for i in (0, 1)]
    plan = plan_sweep(sets=TINY_SETS, grids=["gm.tau=0.01,1"], seeds=[0, 1])
    assert not shard_ids[0] & shard_ids[1]
    assert shard_ids[0] | shard_ids[1] == {t.id for t in plan.trials}
    merged = runner.invoke(app, ["sweep", "--collect", "m0", "m1", "--out", "merged", "--json"])
    assert merged.exit_code == 0, merged.stderr
    report = json.loads(merged.stdout)
    assert report["trials"]["ok"] == 4 and [r["seeds_ok"] for r in report["rows"]] == [[0, 1], [0, 1]]
    for record in trial_records(tmp_path / "merged").values():
        assert (tmp_path / "merged" / record["run_dir"] / "results.json").is_file()
    # one shard alone is an incomplete sweep: exit 1, the gaps counted
    partial = runner.invoke(app, ["sweep", "--collect", "m0", "--out", "partial", "--json"])
    assert partial.exit_code == 1 and json.loads(partial.stdout)["trials"]["unfinished"] == 2
    # the same --out again needs --resume; a different sweep there is refused, naming the difference
    again = sweep(*args, "--shard", "0/2", out="m0")
    assert again.exit_code == 2 and "--resume" in again.stderr
    other = sweep("--grid", "gm.tau=0.01,2", "--seeds", "0,1", "--resume", out="m0")
    assert other.exit_code == 2 and "--grid gm.tau: [0.01,2.0]" in other.stderr
    mixed = runner.invoke(app, ["sweep", "--collect", "m0", "merged", "partial", "--out", "x"])
    assert mixed.exit_code == 0
    assert runner.invoke(app, ["sweep", "--collect", "m0", "m1"]).exit_code == 2  # several dirs need --out


# ---------------------------------------------------------------- plots


def _fake_records(values: list[dict], seeds=(0, 1)) -> tuple[list[dict], list[dict]]:
    """Records as trials write them; the second setting's trials failed."""
    settings = [{"id": f"s{i}", "values": v} for i, v in enumerate(values)]
    records = [
        {
            "setting": s["id"],
            "seed": seed,
            "status": "failed" if i == 1 else "ok",
            "test": {}
            if i == 1
            else {
                b: {"accuracy": 0.5 + 0.01 * i + 0.001 * seed, "macro_f1": 0.4, "map": 0.6, "loss": 1.0}
                for b in ("a", "b", "fused")
            },
        }
        for i, s in enumerate(settings)
        for seed in seeds
    ]
    return settings, records


@pytest.mark.parametrize(
    ("values", "drawn"),
    [
        ([{"gm.tau": t, "sam.rho": r} for t in (1e-3, 0.1, 10, 100) for r in (0.0, 1e-4, 0.05)], True),
        ([{"sam.rho": r} for r in (0.0, 1e-15, 1e-10, 1e-4)], True),
        ([{"gm.enabled": b} for b in (True, False, None)], True),
        ([{"method": m, "fusion": f} for m in ("igm", "joint") for f in ("mean", "entropy")], True),
        ([{"gm.tau": 0.01 * (i + 1), "sam.rho": 0.001 * (7 - i)} for i in range(5)], True),  # scattered
        ([{"a": 1, "b": 2, "c": 3}], False),
        ([{}], False),
    ],
)
def test_plots_for_one_and_two_keys(tmp_path, values, drawn):
    settings, records = _fake_records(values)
    rows = summarize(settings, records)
    png, note = plot_summary(rows, list(values[0]), ("test", "fused", "accuracy"), tmp_path / "p.png", "t")
    assert (png is not None) == drawn == (tmp_path / "p.png").is_file()
    assert note
