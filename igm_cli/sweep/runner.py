"""Running a sweep's trials: in this process or in spawned workers; resumable and shardable.

Each trial writes its own status file `trials/<id>.json` (atomically) and trains into
`trials/<id>/<preset>-<timestamp>/`, so shards on different machines never write the same
file and an interrupted sweep knows exactly what is finished.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EXIT_INTERRUPTED, CheckpointError, IgmError, UsageError
from .files import read_json, trial_path, write_json_atomic

Record = dict[str, Any]
Progress = Callable[[str, float], None]  # (trial id, share of its steps done)


@dataclass(frozen=True)
class TrialJob:
    """What a worker needs to run one trial (plain data: it crosses a process boundary)."""

    out: str
    id: str
    setting: str
    label: str
    values: dict[str, Any]
    seed: int
    preset: dict[str, Any]
    data_dir: str | None = None
    device: str | None = None
    logger: str | None = None  # --logger of every trial's run
    source: str | None = None  # the preset the sweep started from (run.json's overrides)


def run_trial(job: TrialJob, progress: Progress | None = None) -> Record:
    """Train one trial and record its outcome; a failure is recorded, never raised."""
    path = trial_path(Path(job.out), job.id)
    previous = read_json(path) or {}
    record: Record = {
        "id": job.id,
        "setting": job.setting,
        "label": job.label,
        "values": job.values,
        "seed": job.seed,
        "status": "running",
        "attempts": previous.get("attempts", 0) + 1,
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(path, record)
    started = time.perf_counter()
    try:
        results = _train(job, _step_events(job.id, progress))
        record.update(status="ok", selection=results["selection"], val=results["val"], test=results["test"])
    except KeyboardInterrupt:
        record.update(status="interrupted", error="interrupted", exit_code=EXIT_INTERRUPTED)
        raise
    except IgmError as e:
        record.update(status="failed", error=str(e), exit_code=e.exit_code)
    except Exception as e:  # a bug in one trial must not stop the sweep; it is recorded instead
        record.update(status="failed", error=f"{type(e).__name__}: {_first_line(e)}", exit_code=1)
    finally:
        record["seconds"] = round(time.perf_counter() - started, 2)
        run = _latest_run(Path(job.out) / "trials" / job.id)
        record["run_dir"] = os.path.relpath(run, job.out) if run else None
        write_json_atomic(path, record)
    return record


def _step_events(trial: str, progress: Progress | None) -> Callable[[str, dict[str, Any]], None] | None:
    """A trainer event sink reporting the share of the trial's steps done (at most 100 times)."""
    if progress is None:
        return None
    where = {"done": 0, "total": 1, "sent": -1}

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        if kind == "run_start":
            per_epoch, state = payload["batches_per_epoch"], payload["state"]
            where["total"] = max(1, payload["total_epochs"] * per_epoch)
            where["done"] = state["epochs_done"] * per_epoch + state["batch"]
        elif kind == "step":
            where["done"] += 1
        else:
            return
        share = min(1.0, where["done"] / where["total"])
        if int(share * 100) != where["sent"]:
            where["sent"] = int(share * 100)
            progress(trial, share)

    return on_event


def _train(job: TrialJob, on_event=None) -> dict[str, Any]:
    """A fresh run, or the continuation of this trial's interrupted one (exact resume)."""
    from ..pipeline import train
    from ..presets import preset_from_json

    runs = Path(job.out) / "trials" / job.id
    data_dir = Path(job.data_dir) if job.data_dir else None
    unfinished = _latest_run(runs, unfinished=True)
    if unfinished is not None:
        try:
            return train(
                None,
                resume=str(unfinished),
                runs_dir=runs,
                data_dir=data_dir,
                device=job.device,
                on_event=on_event,
                logger=job.logger,
            )
        except (CheckpointError, UsageError):
            pass  # no usable last.safetensors: start this trial afresh
    preset = preset_from_json(job.preset, f"trial {job.id}")
    return train(
        preset,
        data_dir=data_dir,
        runs_dir=runs,
        device=job.device,
        on_event=on_event,
        logger=job.logger,
        source=job.source,
    )


def _latest_run(runs: Path, unfinished: bool = False) -> Path | None:
    """The newest run directory of a trial (with `unfinished`: one that can be resumed)."""
    candidates = [p for p in runs.glob("*") if p.is_dir()] if runs.is_dir() else []
    if unfinished:
        candidates = [
            p for p in candidates if (p / "last.safetensors").is_file() and not (p / "results.json").exists()
        ]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


# ---------------------------------------------------------------- execution


def execute(
    jobs: list[TrialJob],
    workers: int,
    on_record: Callable[[Record], None],
    on_progress: Progress | None = None,
) -> None:
    """Run trials in this process (workers = 1) or in `workers` spawned processes.

    `on_progress(trial id, share)` hears about the steps of running trials (from workers
    through a queue read by a thread here), so a progress bar moves between finished trials.
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            on_record(run_trial(job, on_progress))
        return
    # spawn, not fork: forking a process that has used torch's thread pools can deadlock
    context = multiprocessing.get_context("spawn")
    stop, queue = context.Event(), context.Queue()
    reader = threading.Thread(target=_read_progress, args=(queue, on_progress), daemon=True)
    reader.start()
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=context,
        initializer=_worker_init,
        initargs=(stop, queue if on_progress else None),
    )
    futures = {pool.submit(_run_in_worker, job): job for job in jobs}
    try:
        for future in as_completed(futures):
            on_record(_outcome(future, futures[future]))
    except KeyboardInterrupt:
        stop.set()  # jobs already queued to a worker must not start
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGINT)  # busy workers save last.safetensors and record it
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        queue.put(None)
        reader.join(timeout=5)


def _read_progress(queue: Any, on_progress: Progress | None) -> None:
    """Parent thread: pass the workers' (trial, share) messages on until the None sentinel."""
    while (item := queue.get()) is not None:
        if on_progress is not None:
            on_progress(*item)


_stop: Any = None  # in a worker process: the parent's "stop" event (set by _worker_init)
_progress_queue: Any = None  # in a worker process: where step progress goes (or None)


def _worker_init(stop: Any, progress_queue: Any = None) -> None:
    """One torch thread per worker; Ctrl-C reaches a worker only through the parent."""
    import torch

    global _stop, _progress_queue
    _stop, _progress_queue = stop, progress_queue
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "setpgrp"):
        os.setpgrp()  # out of the terminal's process group: the parent forwards SIGINT once


def _run_in_worker(job: TrialJob) -> Record:
    # while training, SIGINT (from the parent) and SIGTERM (a scheduler) save last.safetensors
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if _stop is not None and _stop.is_set():  # checked after the handlers: no signal is lost
            return {"id": job.id, "status": "not started"}
        queue = _progress_queue
        return run_trial(job, (lambda trial, share: queue.put((trial, share))) if queue is not None else None)
    except KeyboardInterrupt:
        return read_json(trial_path(Path(job.out), job.id)) or {"id": job.id, "status": "interrupted"}
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _outcome(future: Future[Record], job: TrialJob) -> Record:
    """The worker's record; if the worker process died, record that as the trial's failure."""
    try:
        return future.result()
    except Exception as e:  # BrokenProcessPool when a worker is killed (e.g. out of memory)
        path = trial_path(Path(job.out), job.id)
        record = read_json(path) or {"id": job.id, "setting": job.setting, "label": job.label}
        record.setdefault("values", job.values)
        if record.get("status") != "ok":
            record.update(
                seed=job.seed,
                status="failed",
                error=f"worker process died: {type(e).__name__}: {_first_line(e)}",
                exit_code=1,
            )
            write_json_atomic(path, record)
        return record


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (scheduler preemption, `kill`) stops the sweep like Ctrl-C: resumable, exit 130."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
