"""The library behind `igm sweep` and `igm sweep --collect` (DESIGN §5).

Sweeps scale out by sharding trials over machines and merging the results. A sweep
directory holds `sweep.json` (the definition, checked on resume and collect), one
`trials/<id>.json` per trial and its run directory, and the summary files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import EXIT_INTERRUPTED, IgmError, UsageError
from .files import read_json, read_trials, trial_path, write_json_atomic
from .grid import parse_metric, parse_shard
from .plan import FORMAT, SweepPlan, Trial, definition_difference
from .plots import plot_summary
from .runner import TrialJob, execute, sigterm_as_interrupt
from .summary import best_rows, summarize, verdict, write_summary

DEFAULT_METRIC = "val.fused.accuracy"  # selection belongs to validation; test is shown beside it
Event = Callable[[str, dict[str, Any]], None]


class SweepInterrupted(IgmError):
    """Ctrl-C or SIGTERM during a sweep: finished trials and the summary are on disk."""

    exit_code = EXIT_INTERRUPTED


def run_sweep(
    plan: SweepPlan,
    out: Path | None = None,
    *,
    jobs: int = 1,
    resume: bool = False,
    shard: str | None = None,
    data_dir: Path | None = None,
    device: str | None = None,
    metric: str = DEFAULT_METRIC,
    on_event: Event | None = None,
    logger: str | None = None,
) -> dict[str, Any]:
    """Run this shard's trials (skipping finished ones with `resume`) and summarize the directory."""
    _check_metric(metric, plan.branches)
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1 (got {jobs})")
    if resume and out is None:
        raise UsageError("--resume needs --out DIR: the sweep directory to continue")
    index, count = parse_shard(shard) if shard else (0, 1)
    out = Path(out) if out is not None else _default_out(plan)
    mine = plan.shard(index, count)
    doc = _open_sweep_dir(plan, out, resume, mine)
    finished = {t.id for t in mine if resume and _status(out, t.id) == "ok"}
    todo = [t for t in mine if t.id not in finished]
    emit = on_event or (lambda *_: None)
    counts = {"trials": len(plan.trials), "settings": len(plan.settings), "seeds": len(plan.seeds)}
    shard_name = f"{index}/{count}" if shard else None
    emit(
        "sweep_start",
        {
            **counts,
            "out": str(out),
            "shard": shard_name,
            "to_run": len(todo),
            "finished": len(finished),
            "jobs": jobs,
        },
    )
    try:
        with sigterm_as_interrupt():
            execute(
                [_job(out, t, data_dir, device, logger, plan.preset) for t in todo],
                jobs,
                _progress(emit, len(todo), metric),
                lambda trial, share: emit("trial_progress", {"id": trial, "share": share}),
            )
    except KeyboardInterrupt:
        report = build_report(out, doc, [t.id for t in mine], metric)
        raise SweepInterrupted(
            f"interrupted: {report['trials']['ok']} of {len(mine)} trials finished ok and are summarized "
            f"in {out}; run the same command with --resume --out {out} to run the rest"
        ) from None
    return {
        **build_report(out, doc, [t.id for t in mine], metric),
        "ran": len(todo),
        "skipped": len(finished),
    }


def _check_metric(metric: str, branches: list[str]) -> None:
    branch = parse_metric(metric)[1]
    if branch not in branches:
        raise UsageError(
            f"invalid --metric {metric!r}: branch {branch!r} is not one of {', '.join(branches)}"
        )


def _default_out(plan: SweepPlan) -> Path:
    stem = Path("sweeps") / f"{plan.definition['base']['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = stem, 1
    while path.exists():
        n += 1
        path = stem.with_name(f"{stem.name}-{n}")
    return path


def _open_sweep_dir(plan: SweepPlan, out: Path, resume: bool, mine: list[Trial]) -> dict[str, Any]:
    """Create the directory and sweep.json, or check that it holds this very sweep."""
    stored = read_json(out / "sweep.json")
    if stored is None and (out / "trials").is_dir():
        stored = read_json(out / "sweep.json")  # a shard started at the same moment may have written it
        if stored is None:
            raise UsageError(f"{out} has trials/ but no readable sweep.json; choose another --out")
    if stored is None:
        doc = plan.sweep_json()
        write_json_atomic(out / "sweep.json", doc)
        return doc
    diff = definition_difference(
        plan.definition, stored.get("definition", {}), ("this command", "sweep.json")
    )
    if diff:
        raise UsageError(f"{out} holds a different sweep: {diff}; choose another --out")
    started = [t.id for t in mine if trial_path(out, t.id).exists()]
    if started and not resume:
        raise UsageError(
            f"{out} already has {len(started)} trial(s) of this sweep; add --resume to run only the "
            "missing ones, or choose another --out"
        )
    return stored


def _status(out: Path, trial_id: str) -> str | None:
    record = read_json(trial_path(out, trial_id))
    return record.get("status") if isinstance(record, dict) else None


def _job(
    out: Path, trial: Trial, data_dir: Path | None, device: str | None, logger: str | None, source: str
) -> TrialJob:
    return TrialJob(
        out=str(out),
        id=trial.id,
        setting=trial.setting.id,
        label=trial.setting.label,
        values=trial.setting.values,
        seed=trial.seed,
        preset=trial.preset(),
        data_dir=str(data_dir) if data_dir else None,
        device=device,
        logger=logger,
        source=source,
    )


def _progress(emit: Event, total: int, metric: str) -> Callable[[dict[str, Any]], None]:
    split, branch, name = parse_metric(metric)
    done = 0

    def on_record(record: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        score = record.get(split, {}).get(branch, {}).get(name) if record.get("status") == "ok" else None
        emit("trial_end", {"record": record, "done": done, "total": total, "metric": metric, "score": score})

    return on_record


# ---------------------------------------------------------------- summary and collect


def build_report(out: Path, doc: dict[str, Any], scope: list[str], metric: str) -> dict[str, Any]:
    """Summarize every trial recorded in `out`; failures and gaps are counted within `scope`."""
    records = read_trials(out, doc["trials"])
    rows = summarize(doc["settings"], list(records.values()))
    files = write_summary(out, doc["keys"], rows, metric)
    settings, seeds = len(doc["settings"]), len(doc["definition"]["seeds"])
    title = (
        f"{doc['definition']['base']['name']} sweep · {_count(settings, 'setting')} × {_count(seeds, 'seed')}"
    )
    png, note = plot_summary(rows, doc["keys"], parse_metric(metric), out / "summary.png", title)
    failed = [records[i] for i in scope if records.get(i, {}).get("status") == "failed"]
    unfinished = [i for i in scope if records.get(i, {}).get("status") not in ("ok", "failed")]
    best = best_rows(rows, parse_metric(metric))
    return {
        "sweep_dir": str(out),
        "preset": doc["preset"],
        "keys": doc["keys"],
        "seeds": doc["definition"]["seeds"],
        "metric": metric,
        "trials": {
            "planned": len(doc["trials"]),
            "in_scope": len(scope),
            "ok": sum(records.get(i, {}).get("status") == "ok" for i in scope),
            "failed": len(failed),
            "unfinished": len(unfinished),
        },
        "failed": [
            {k: r.get(k) for k in ("id", "label", "values", "seed", "error", "exit_code", "attempts")}
            for r in failed
        ],
        "best": best
        and {
            "setting": best[0]["setting"],
            "values": best[0]["values"],
            "tied": [r["setting"] for r in best] if len(best) > 1 else [],
        },
        "verdict": verdict(rows, parse_metric(metric)),
        "rows": rows,
        "files": {**files, "plot": png},
        "plot_note": note,
        "exit_code": 1 if failed or unfinished else 0,
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def collect_sweeps(dirs: list[Path], out: Path | None = None, metric: str = DEFAULT_METRIC) -> dict[str, Any]:
    """Merge sweep directories (shards) of one sweep into `out` and summarize them."""
    if not dirs:
        raise UsageError("--collect needs at least one sweep directory")
    docs = [_read_sweep(Path(d)) for d in dirs]
    for d, doc in zip(dirs[1:], docs[1:], strict=True):
        diff = definition_difference(docs[0]["definition"], doc["definition"], (str(dirs[0]), str(d)))
        if diff:
            raise UsageError(f"cannot merge {dirs[0]} and {d}, they are different sweeps: {diff}")
    if out is None and len(dirs) > 1:
        raise UsageError("--collect of several directories needs --out DIR for the merged sweep")
    out = Path(out) if out is not None else Path(dirs[0])
    stored = read_json(out / "sweep.json")
    if stored is not None:
        diff = definition_difference(
            docs[0]["definition"], stored.get("definition", {}), ("inputs", str(out))
        )
        if diff:
            raise UsageError(f"{out} holds a different sweep: {diff}; choose another --out")
    else:
        write_json_atomic(out / "sweep.json", docs[0])
    for trial_id, (record, source) in _merge([Path(d) for d in dirs], docs[0]["trials"]).items():
        if source.resolve() != out.resolve():
            write_json_atomic(trial_path(out, trial_id), _relocated(record, source, out))
    _check_metric(metric, _branches(out, docs[0]))
    report = build_report(out, docs[0], docs[0]["trials"], metric)
    return {**report, "collected": [str(d) for d in dirs]}


def _read_sweep(path: Path) -> dict[str, Any]:
    doc = read_json(path / "sweep.json")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UsageError(f"{path} is not a sweep directory (no readable sweep.json)")
    return doc


def _merge(dirs: list[Path], trial_ids: list[str]) -> dict[str, tuple[dict[str, Any], Path]]:
    """Per trial the best record over all directories: ok beats failed beats unfinished."""
    rank = {"ok": 0, "failed": 1}
    merged: dict[str, tuple[dict[str, Any], Path]] = {}
    for d in dirs:
        for trial_id, record in read_trials(d, trial_ids).items():
            best = merged.get(trial_id)
            if best is None or rank.get(record.get("status"), 2) < rank.get(best[0].get("status"), 2):
                merged[trial_id] = (record, d)
    return merged


def _relocated(record: dict[str, Any], source: Path, out: Path) -> dict[str, Any]:
    """The record with its run directory expressed relative to the merged directory."""
    if not record.get("run_dir"):
        return record
    return {**record, "run_dir": os.path.relpath(source / record["run_dir"], out)}


def _branches(out: Path, doc: dict[str, Any]) -> list[str]:
    records = read_trials(out, doc["trials"]).values()
    names = {b for r in records for split in ("val", "test") for b in r.get(split, {})}
    names |= {m["name"] for m in doc["definition"]["base"]["modalities"]}
    return sorted(names - {"fused"}) + ["fused"]
