"""Signals, disks, divergence, locking and `--resume auto`: what a run leaves on disk."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from igm_cli import durable
from igm_cli.checkpoint import load_checkpoint, save_checkpoint
from igm_cli.cli import app
from igm_cli.errors import DivergedError
from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from igm_cli.runs import RunLock, read_jsonl
from tests.helpers import TINY_SETS, set_args

runner = CliRunner()
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


def model_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).group("model")


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    return lines[-1]


# ---------------------------------------------------------------- signals


def test_sigterm_is_like_ctrl_c_exit_130_and_resumable(tmp_path):
    sets = [*TINY_SETS, "stages.epochs=[15,15]"]
    cmd = [sys.executable, "-m", "igm_cli", "train", "-q", *set_args(sets)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        metrics = list((tmp_path / "runs").glob("*/metrics.jsonl"))
        if metrics and metrics[0].read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    run = only_run(tmp_path / "runs")
    assert f"resumable checkpoint runs/{run.name}/last.safetensors" in err.decode()
    state = load_checkpoint(run / "last.safetensors").state
    assert state["epochs_done"] >= 1 and not (run / "results.json").exists()


def test_interrupt_before_the_run_directory_exists_says_nothing_was_written(tmp_path, monkeypatch):
    import igm_cli.pipeline as pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "open_data", interrupted)
    result = runner.invoke(app, ["train", *set_args(TINY_SETS)])
    assert result.exit_code == 130
    assert "nothing was written" in result.stderr and "resumable" not in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_interrupt_before_the_first_checkpoint_says_there_is_none(tmp_path, monkeypatch):
    import igm_cli.pipeline as pipeline

    real = pipeline._build_trainer

    def build_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_build_trainer", build_then_stop)
    result = runner.invoke(app, ["train", *set_args(TINY_SETS)])
    assert result.exit_code == 130
    run = only_run(tmp_path / "runs")
    assert f"runs/{run.name} has none" in result.stderr and "resumable checkpoint" not in result.stderr
    assert not (run / "last.safetensors").exists()


# ---------------------------------------------------------------- divergence


def poison_at(step: int, then: type[BaseException] | None = None):
    """Make the weights non-finite after `step` (then optionally raise, like a Ctrl-C)."""
    fired = []

    def on_event(kind, payload):
        if kind == "step" and payload["stage"] == 0 and payload["batch"] == step and not fired:
            fired.append(True)
            from igm_cli.pipeline import RunSink

            model = RunSink.current_model
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
            if then is not None:
                raise then

    return on_event


@pytest.fixture
def track_model(monkeypatch):
    """Expose the model being trained to poison_at (through the sink the pipeline builds)."""
    from igm_cli.pipeline import RunSink

    real_init = RunSink.__init__

    def init(self, run_dir, model, *args, **kwargs):
        real_init(self, run_dir, model, *args, **kwargs)
        RunSink.current_model = model

    monkeypatch.setattr(RunSink, "__init__", init)


def test_divergence_then_ctrl_c_keeps_the_good_last_checkpoint(tmp_path, track_model):
    preset = resolve_preset("mfeat", [*TINY_SETS, "stages.epochs=[3,1]"])
    state = {}

    def on_event(kind, payload):
        if kind == "epoch_end" and payload["epochs_done"] == 1:
            state["after_epoch_1"] = True
        if state.get("after_epoch_1"):
            poison(kind, payload)

    poison = poison_at(20, KeyboardInterrupt)
    with pytest.raises(DivergedError, match="not overwritten") as e:
        train(preset, runs_dir=tmp_path / "runs", on_event=on_event)
    run = only_run(tmp_path / "runs")
    last = load_checkpoint(run / "last.safetensors")
    assert last.state["epochs_done"] == 1  # the good checkpoint of epoch 1, untouched
    assert all(torch.isfinite(t).all() for t in last.group("model").values() if t.is_floating_point())
    assert "holds the last good state (after 1 epochs" in str(e.value)


def test_divergence_in_the_first_epoch_claims_no_checkpoint(tmp_path, track_model):
    preset = resolve_preset("mfeat", TINY_SETS)
    with pytest.raises(DivergedError) as e:
        train(preset, runs_dir=tmp_path / "runs", on_event=poison_at(3))
    run = only_run(tmp_path / "runs")
    assert not (run / "last.safetensors").exists()
    assert "no checkpoint was written" in str(e.value)
    assert "holds" not in str(e.value)


# ---------------------------------------------------------------- durable writes


def test_checkpoint_is_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else str(fd)
        events.append(("fsync", Path(target).name))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable.os, "replace", replace)
    save_checkpoint(tmp_path / "x.safetensors", {"w": torch.ones(3)}, preset={}, model_info={}, state={})
    names = [e for e in events if e[0] == "fsync"]
    assert events.index(("replace", "x.safetensors")) > 0
    tmp_synced = [
        i for i, e in enumerate(events) if e[0] == "fsync" and e[1].startswith(".x.safetensors.tmp")
    ]
    dir_synced = [i for i, e in enumerate(events) if e == ("fsync", tmp_path.name)]
    assert tmp_synced and dir_synced, names
    assert tmp_synced[0] < events.index(("replace", "x.safetensors")) < dir_synced[-1]


class DiskFull:
    """Counts the files durable.py opens for writing; the n-th one fails with ENOSPC."""

    def __init__(self, fail_at: int | None):
        self.fail_at, self.opened = fail_at, []

    def __call__(self, path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)  # noqa: SIM115 (returned to the caller)
        if any(c in mode for c in "wa"):
            self.opened.append(Path(path).name)
            if len(self.opened) == self.fail_at:
                f.close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return f


def write_sites() -> list[tuple[str, int]]:
    """Each kind of file a tiny run writes, with the index of its first write."""
    probe = DiskFull(None)
    durable_open = durable.__dict__.get("open")
    durable.open = probe
    try:
        train(resolve_preset("mfeat", TINY_SETS), runs_dir=Path("probe"))
    finally:
        if durable_open is None:
            del durable.open
        else:
            durable.open = durable_open
    first: dict[str, int] = {}
    for i, name in enumerate(probe.opened, 1):
        kind = name.split(".tmp-")[0].lstrip(".")
        first.setdefault(kind, i)
        if kind == "last.safetensors" and i != first[kind]:
            first.setdefault("last.safetensors (replacing a good one)", i)
    return sorted(first.items(), key=lambda kv: kv[1])


def test_a_full_disk_at_every_write_site_is_one_line_and_leaves_nothing_mistaken(tmp_path, monkeypatch):
    sites = write_sites()
    assert {k for k, _ in sites} >= {
        "config.yaml",
        "metrics.jsonl",
        "best.safetensors",
        "last.safetensors",
        "last.safetensors (replacing a good one)",
        "results.json",
    }
    for n, (site, index) in enumerate(sites):
        runs = tmp_path / f"full-{n}"
        monkeypatch.setattr(durable, "open", DiskFull(index), raising=False)
        result = runner.invoke(app, ["train", "--runs-dir", str(runs), *set_args(TINY_SETS)])
        monkeypatch.delattr(durable, "open")
        assert result.exit_code == 1, (site, result.stderr)
        line = one_line_error(result.stderr)
        assert "No space left on device" in line and site.split(" ")[0] in line, (site, line)
        run = only_run(runs)
        assert not list(run.glob(".*tmp*")), site  # no temporary file is left behind
        assert not (run / "results.json").exists()
        if (run / "last.safetensors").exists():  # what is there is a good, loadable checkpoint
            load_checkpoint(run / "last.safetensors")
        # the same requeue command then finishes the run
        again = runner.invoke(
            app, ["train", "--resume", "auto", "-q", "--runs-dir", str(runs), *set_args(TINY_SETS)]
        )
        assert again.exit_code == 0, (site, again.stderr)
        assert json.loads((only_run(runs) / "results.json").read_text())["epochs"] == 2


# ---------------------------------------------------------------- metrics.jsonl on resume


def test_resume_drops_metric_records_written_after_its_checkpoint(tmp_path):
    sets = [*TINY_SETS, "stages.epochs=[2,1]"]
    whole = train(resolve_preset("mfeat", sets), runs_dir=tmp_path / "whole")
    reference = read_jsonl(Path(whole["run_dir"]) / "metrics.jsonl")

    def stop(kind, payload):
        if kind == "step" and payload["epoch"] == 1 and payload["batch"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(resolve_preset("mfeat", sets), runs_dir=tmp_path / "cut", on_event=stop)
    run = only_run(tmp_path / "cut")
    metrics = run / "metrics.jsonl"
    records = read_jsonl(metrics)
    # as if a kill landed after the next epoch's and stage's records but before the checkpoint
    stray = {**records[-1], "epochs_done": 2, "epoch": 1}
    with open(metrics, "a") as f:
        f.write(json.dumps(stray) + "\n" + json.dumps({"kind": "stage", "stage": 0}) + "\n" + '{"kind": "ep')
    train(None, resume=str(run), runs_dir=tmp_path / "cut")
    resumed = read_jsonl(metrics)
    assert metrics.read_text().count("\n") == len(resumed)
    key = [(r["kind"], r.get("epochs_done"), r["stage"]) for r in resumed]
    assert key == [(r["kind"], r.get("epochs_done"), r["stage"]) for r in reference]


# ---------------------------------------------------------------- locking


def interrupted_run(runs: Path, step: int = 5) -> Path:
    def stop(kind, payload):
        if kind == "step" and payload["batch"] == step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(resolve_preset("mfeat", TINY_SETS), runs_dir=runs, on_event=stop)
    return only_run(runs)


def test_a_locked_run_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(tmp_path):
    run = interrupted_run(tmp_path / "runs")
    with RunLock(run):
        held = runner.invoke(app, ["train", "--resume", str(run)])
        assert held.exit_code == 2
        assert f"pid {os.getpid()}" in held.stderr and "in use" in held.stderr
        auto = runner.invoke(app, ["train", "--resume", "auto"])
        assert auto.exit_code == 2 and "in use" in auto.stderr
    # a lock file left by a process that died (kill -9): nobody holds it any more
    (run / "lock").write_text("pid 999999 on host elsewhere\n")
    taken = runner.invoke(app, ["train", "--resume", str(run), "-q"])
    assert taken.exit_code == 0, taken.stderr
    assert not (run / "lock").exists()


# ---------------------------------------------------------------- --resume auto


def test_resume_auto_is_one_idempotent_command(tmp_path):
    cmd = ["train", "--resume", "auto", "-q", "--json", *set_args(TINY_SETS)]
    # nothing to resume: a new run, said on stderr and in results.json
    first = runner.invoke(app, cmd)
    assert first.exit_code == 0, first.stderr
    assert "starting a new run" in first.stderr
    results = json.loads(first.stdout)
    assert results["resume"]["action"] == "new"
    run = Path(results["run_dir"])
    # the newest run finished: its results, exit 0, nothing trained
    again = runner.invoke(app, cmd)
    assert again.exit_code == 0, again.stderr
    assert "already finished" in again.stderr
    assert json.loads(again.stdout) == results
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run.name]
    # an interrupted run of the same preset is resumed
    cut = interrupted_run(tmp_path / "runs2")
    resumed = runner.invoke(app, [*cmd, "--runs-dir", "runs2"])
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resume"]["action"] == "resume"
    assert Path(json.loads(resumed.stdout)["run_dir"]).name == cut.name
    # with --set, runs of other settings of the preset are not touched
    other = runner.invoke(app, [*cmd, "--runs-dir", "runs2", "--set", "seed=3"])
    assert other.exit_code == 0 and json.loads(other.stdout)["resume"]["action"] == "new"


def test_resume_auto_reuses_a_run_directory_left_without_a_checkpoint(tmp_path, monkeypatch):
    import igm_cli.pipeline as pipeline

    preset = resolve_preset("mfeat", TINY_SETS)
    real = pipeline._build_trainer

    def build_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_build_trainer", build_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(preset, runs_dir=tmp_path / "runs")
    monkeypatch.setattr(pipeline, "_build_trainer", real)
    empty = only_run(tmp_path / "runs")
    (empty / "metrics.jsonl").write_text('{"kind": "epoch", "epochs_done": 1, "stage": 0}\n')
    results = train(preset, resume="auto", runs_dir=tmp_path / "runs")
    assert results["resume"]["action"] == "reuse" and Path(results["run_dir"]) == empty
    assert only_run(tmp_path / "runs") == empty
    assert [r["kind"] for r in read_jsonl(empty / "metrics.jsonl")] == ["epoch", "stage", "epoch", "stage"]


# ---------------------------------------------------------------- kill -9 soak


def _child(runs: Path, kill: str) -> None:
    """In a forked child: `igm train --resume auto` that SIGKILLs itself at `kill`."""
    import igm_cli.checkpoint as checkpoint
    import igm_cli.engine.trainer as trainer

    die = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    if kill == "mid-checkpoint-write":  # the temporary file is complete, the rename never happens
        real = checkpoint.write_atomic

        calls = []

        def write(path, data):
            calls.append(path.name)
            if path.name == "last.safetensors" and calls.count(path.name) == 2:
                tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
                tmp.write_bytes(data[: len(data) // 2])
                die()
            real(path, data)

        checkpoint.write_atomic = write
    elif kill == "stage-boundary":  # the stage record is logged, its checkpoint not yet written
        real_end = trainer.Trainer._end_stage

        def end_stage(self, stage, state):
            real_end(self, stage, state)
            die()

        trainer.Trainer._end_stage = end_stage
    from igm_cli.cli import app as cli_app

    try:
        cli_app(
            ["train", "--resume", "auto", "-q", "--runs-dir", str(runs), *SOAK_ARGS], standalone_mode=False
        )
    finally:
        os._exit(0)


SOAK_ARGS = set_args([*TINY_SETS, "stages.epochs=[2,1,1]", "modalities.fou.encoder.dropout=0.2"])


def test_kill_9_at_random_points_then_resume_auto_equals_an_uninterrupted_run(tmp_path):
    random.seed(7)
    runs = tmp_path / "runs"
    whole = runner.invoke(app, ["train", "-q", "--runs-dir", "whole", *SOAK_ARGS])
    assert whole.exit_code == 0, whole.stderr
    kills = ["stage-boundary", "mid-checkpoint-write", "timer", "timer", "stage-boundary", "timer"]
    killed = 0
    for kill in kills:
        pid = os.fork()
        if pid == 0:
            _child(runs, kill)
        if kill == "timer":
            time.sleep(random.uniform(0.05, 0.6))
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        killed += os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert killed >= 5
    final = runner.invoke(
        app, ["train", "--resume", "auto", "-q", "--json", "--runs-dir", str(runs), *SOAK_ARGS]
    )
    assert final.exit_code == 0, final.stderr
    run = Path(json.loads(final.stdout)["run_dir"])
    assert [p.name for p in runs.iterdir()] == [run.name]  # every round continued the same run
    a = model_tensors(only_run(tmp_path / "whole") / "last.safetensors")
    b = model_tensors(run / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["kind"] for r in read_jsonl(run / "metrics.jsonl")] == ["epoch"] * 2 + ["stage"] + [
        "epoch",
        "stage",
    ] * 2


def test_a_full_disk_in_landscape_and_sweep_files_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch):
    """surfaces.safetensors, landscape.json and the sweep's own files go through durable.py too."""
    run = Path(train(resolve_preset("mfeat", TINY_SETS), runs_dir=tmp_path / "runs")["run_dir"])
    commands = {
        "landscape": ["landscape", str(run), "--grid", "3", "--batches", "1", "--out", str(tmp_path / "ls")],
        "sweep": ["sweep", "--out", str(tmp_path / "sw"), "--seeds", "0", *set_args(TINY_SETS)],
    }
    for name, args in commands.items():
        monkeypatch.setattr(durable, "open", DiskFull(1), raising=False)
        result = runner.invoke(app, args)
        monkeypatch.delattr(durable, "open")
        assert result.exit_code == 1, (name, result.stderr)
        line = one_line_error(result.stderr)
        assert "No space left on device" in line and "cannot write" in line, (name, line)
        assert not list(tmp_path.rglob(".*.tmp*")), name  # no temporary file is left behind
