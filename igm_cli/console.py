"""The only user of rich: human output on stderr, progress on a TTY, one JSON document on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True, width=None if sys.stderr.isatty() else 110)
METRIC_COLUMNS = ("accuracy", "macro_f1", "map")


def error(message: str) -> None:
    """One line naming the problem, printed literally (a path like `runs/[exp]` is not markup)."""
    from rich.text import Text

    one_line = " ".join(message.split("\n"))
    console.print(Text.assemble(("error:", "bold red"), " ", one_line), highlight=False, soft_wrap=True)


def error_json(message: str, exit_code: int, kind: str) -> None:
    """The error as the one JSON document of `--json` (the line on stderr is printed as well)."""
    emit_json({"error": {"message": message, "exit_code": exit_code, "kind": kind}})


def info(message: str, markup: bool = True) -> None:
    """A line of human output."""
    console.print(message, highlight=False, soft_wrap=True, markup=markup)


def emit_json(document: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


class EventDisplay:
    """Base of the event sinks: used as a context manager, with a progress bar on a TTY only."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task = None

    def __enter__(self) -> Callable[[str, dict[str, Any]], None]:
        return self.on_event

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def on_event(self, kind: str, payload: dict[str, Any]) -> None:
        """Render one event (subclasses)."""
        raise NotImplementedError

    def start_progress(self, label: str, total: int, completed: int = 0, transient: bool = False) -> None:
        """Show a bar when stderr is a terminal (never in logs or under --quiet)."""
        if not console.is_terminal or self.quiet:
            return
        columns = (
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.progress = Progress(*columns, console=console, transient=transient)
        self.task = self.progress.add_task(label, total=total, completed=completed)
        self.progress.start()

    def advance(self, amount: float = 1.0) -> None:
        """Work done (fractions move the bar and the ETA between whole units)."""
        if self.progress is not None:
            self.progress.advance(self.task, amount)


class TrainingDisplay(EventDisplay):
    """Event sink for the trainer: a progress bar on a TTY, one line per epoch otherwise."""

    def on_event(self, kind: str, payload: dict[str, Any]) -> None:
        """Render one trainer event."""
        if kind == "resume_auto":  # said even under --quiet: it is what the command decided
            info(resume_auto_line(payload), markup=False)
        if self.quiet:
            return
        if kind == "run_start":
            verb = "resuming" if payload["resumed"] else "run"
            threads = payload.get("threads")
            info(
                f"{verb} [bold]{_escape(payload['run_dir'])}[/]"
                + (f" ({_count(threads, 'thread')})" if threads else "")
            )
            per_epoch, state = payload["batches_per_epoch"], payload["state"]
            done = state["epochs_done"] * per_epoch + state["batch"]
            self.start_progress("training", payload["total_epochs"] * per_epoch, done, transient=True)
        elif kind == "step":
            self.advance()
        elif kind == "stage_start":
            info(
                f"stage {payload['stage']}: train {'+'.join(payload['active'])} "
                f"for {payload['epochs']} epochs; {gm_note(payload)}"
            )
        elif kind == "epoch_end":
            val = payload["val"]
            parts = " ".join(f"{m} {v['accuracy']:.3f}" for m, v in val.items())
            mark = " *" if payload["best"] else ""
            loss = payload["train_loss"]
            info(f"  epoch {payload['epochs_done']:>3}  loss {loss:.4f}  val acc: {parts}{mark}")
        elif kind == "stage_end":
            removed = payload["gm_removed_share"]
            if removed:
                share = ", ".join(f"{k} {v:.1%}" for k, v in removed.items())
                info(f"  GM removed this share of the gradient norm: {share}")


def gm_note(payload: dict[str, Any]) -> str:
    """What GM does in a stage, as true as the trainer's stage_start event allows."""
    source = payload.get("source")
    if not payload.get("gm", True) or source is None:
        return "no GM"
    if payload["paired"]:
        return f"T from {source} on {', '.join(payload['paired'])}"
    return f"T = I (no T of {source} yet)"


def resume_auto_line(p: dict[str, Any]) -> str:
    """The one line `--resume auto` says about what it chose."""
    run = p["run_dir"]
    return {
        "finished": f"--resume auto: the newest run {run} already finished; its results (nothing trained)",
        "resume": f"--resume auto: resuming the newest unfinished run {run}",
        "reuse": f"--resume auto: {run} has no checkpoint yet; training it from the start",
        "new": f"--resume auto: no run of preset {p['preset']} under {p['runs_dir']} to resume; "
        "starting a new run",
    }[p["action"]]


def results_table(results: dict[str, Any]) -> None:
    """Per-branch and fused metrics, validation (selected epoch) beside test."""
    table = Table(
        title=f"{results['preset']} · {results['method']} · SAM ρ {results.get('sam_rho', 0):g} · "
        f"selected epoch {results['selection']['epoch']} by val {results['selection']['metric']}"
    )
    table.add_column("branch")
    for split in ("val", "test"):
        for metric in METRIC_COLUMNS:
            table.add_column(f"{split} {metric}", justify="right")
    for name in [*results["modalities"], "fused"]:
        cells = [
            f"{results[s].get(name, {}).get(m, float('nan')):.4f}"
            for s in ("val", "test")
            for m in METRIC_COLUMNS
        ]
        table.add_row(f"[bold]{name}[/]" if name == "fused" else name, *cells)
    console.print(table)
    if results["stages"]:
        stage_table(results["stages"])
    info(f"run directory: {results['run_dir']}")


def stage_table(stages: list[dict[str, Any]]) -> None:
    """What GM and SAM did per stage: gradient share T removed, trace(T)/d, weights ε moved."""
    table = Table(title="what the method did, per stage")
    for column in (
        "stage",
        "trained",
        "T from",
        "layer ← T of",
        "share of ‖∇W‖ removed by T",
        "trace(T)/d of new T",
        "SAM ε as realized",
    ):
        table.add_column(column)
    for s in stages:
        removed = ", ".join(f"{k} {v:.1%}" for k, v in s["gm_removed_share"].items()) or "— (no T)"
        traces = "; ".join(
            f"{k} {v:.3f}" for layers in s["T_trace_ratio"].values() for k, v in layers.items()
        )
        sam = s.get("sam_realized")
        sam = (
            "off"
            if sam is None
            else f"{sam['moved_share']:.1%} of weights, ‖ε‖/‖θ‖ {sam['relative_size']:.1e}"
        )
        pairs = _pairs_cell(s.get("gm_pairs"))
        source = s["source"] if s["gm_removed_share"] and s.get("source") else "—"  # the T that acted
        table.add_row(str(s["stage"]), "+".join(s["active"]), source, pairs, removed, traces or "—", sam)
    console.print(table)


def _pairs_cell(pairs: dict[str, str | None] | None) -> str:
    """`head.1 ← text.head.0, …; none: head.0` (which layer got which modality's T)."""
    if not pairs:
        return "—"
    if all(src and src.split(".", 1)[-1] == layer for layer, src in pairs.items()):
        return "same layers"  # the common case (equal heads): every layer got its namesake's T
    got = ", ".join(f"{layer} ← {src}" for layer, src in pairs.items() if src)
    none = ", ".join(layer for layer, src in pairs.items() if not src)
    return "; ".join(part for part in (got, f"none: {none}" if none else "") if part)


def eval_table(result: dict[str, Any]) -> None:
    """Metrics of `igm eval`."""
    info(f"checkpoint {result['checkpoint']}", markup=False)  # its own line: a path never wraps in a title
    table = Table(title=f"{result['split']} ({result['samples']} samples) · fusion {result['fusion']}")
    table.add_column("branch")
    for metric in (*METRIC_COLUMNS, "loss"):
        table.add_column(metric, justify="right")
    for name, values in result["metrics"].items():
        table.add_row(name, *(f"{values[m]:.4f}" for m in (*METRIC_COLUMNS, "loss")))
    console.print(table)


def presets_table(rows: list[dict[str, str]]) -> None:
    """`igm presets list`."""
    table = Table()
    for column in ("name", "dataset", "method", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(row[c] for c in ("name", "dataset", "method", "description")))
    console.print(table)


def print_text(text: str) -> None:
    """Plain text to stderr without markup."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


# ================================================================ igm sweep
# Rendering of `igm sweep`: one line per finished trial (plus a progress bar on a TTY) and
# the summary tables. Everything below reads the plain dicts built by igm_cli.sweep.


def _escape(text: str) -> str:
    """User text (labels, paths, error messages) printed literally, never as rich markup."""
    from rich.markup import escape

    return escape(text)


class SweepDisplay(EventDisplay):
    """Event sink of a sweep: a start line, one line per finished trial, a TTY progress bar."""

    def __init__(self, quiet: bool = False):
        super().__init__(quiet)
        self.shares: dict[str, float] = {}  # trial id → share of its steps already on the bar

    def on_event(self, kind: str, payload: dict[str, Any]) -> None:
        """Render one sweep event (`sweep_start`, `trial_progress` or `trial_end`)."""
        if kind == "sweep_start":
            self._start(payload)
        elif kind == "trial_progress":  # the bar (and its ETA) moves with the running trials' steps
            before = self.shares.get(payload["id"], 0.0)
            self.shares[payload["id"]] = max(before, payload["share"])
            self.advance(self.shares[payload["id"]] - before)
        elif kind == "trial_end":
            self._trial_end(payload)

    def _start(self, p: dict[str, Any]) -> None:
        shard = f", shard {p['shard']}" if p["shard"] else ""
        done = f", {p['finished']} already finished" if p["finished"] else ""
        info(
            f"sweep [bold]{_escape(p['out'])}[/]: {_count(p['trials'], 'trial')} = "
            f"{_count(p['settings'], 'setting')} × {_count(p['seeds'], 'seed')}{shard}; "
            f"running {p['to_run']}{done} with {_count(p['jobs'], 'job')}"
        )
        if p["to_run"]:
            self.start_progress("trials", p["to_run"])

    def _trial_end(self, p: dict[str, Any]) -> None:
        r = p["record"]
        self.advance(1.0 - self.shares.pop(r.get("id", ""), 0.0))
        head = f"  [{p['done']}/{p['total']}] {r['id']}  {_escape(r.get('label', ''))}  seed {r['seed']}"
        if r["status"] == "ok":
            line = f"{head}: ok · {p['metric']} {p['score']:.4f} · {r['seconds']:.1f} s"
        elif r["status"] == "failed":
            line = f"{head}: [red]failed[/] (exit {r.get('exit_code')}): {_escape(str(r.get('error')))}"
        else:
            line = f"{head}: {r['status']}"
        if not self.quiet or r["status"] != "ok":
            info(line)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _mean_std(stats: dict[str, Any] | None) -> str:
    if not stats or stats.get("mean") is None:
        return "—"
    std = stats.get("std")
    return f"{stats['mean']:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def sweep_report(report: dict[str, Any]) -> None:
    """The summary of a sweep: one row per setting, a key × key table, files, failures.

    The setting is chosen on the metric's split (validation by default); the same metric on
    the other split is shown beside it, never used to choose. Tied best settings are all marked.
    """
    rows, keys = report["rows"], report["keys"]
    split, chosen, name = report["metric"].split(".")
    other = "test" if split == "val" else "val"
    best_info = report.get("best") or {}
    best = set(best_info.get("tied") or ([best_info["setting"]] if best_info.get("setting") else []))
    branches = list(dict.fromkeys(b for r in rows for b in r["metrics"][split]))
    branches = [chosen] + [b for b in branches if b != chosen]
    table = Table(title=f"{report['preset']} sweep · {split} {name}, mean ± std over seeds")
    for key in keys:
        table.add_column(key)
    table.add_column("seeds ok", justify="right")
    for branch in branches:
        table.add_column(f"[bold]{branch}[/]" if branch == chosen else branch, justify="right")
    table.add_column(f"{other} {chosen} (not used to choose)", justify="right")
    for r in rows:
        n = len(r["seeds_ok"]) + len(r["seeds_failed"])
        cells = [_escape(r["labels"][k]) for k in keys] + [f"{len(r['seeds_ok'])}/{n}"]
        cells += [_mean_std(r["metrics"][split].get(b, {}).get(name)) for b in branches]
        cells.append(_mean_std(r["metrics"].get(other, {}).get(chosen, {}).get(name)))
        if r["setting"] in best:
            cells = [f"[bold green]{c}[/]" for c in cells]
            cells[-len(branches) - 1] += " ★ tie" if len(best) > 1 else " ★"
        table.add_row(*cells)
    console.print(table)
    if len(keys) == 2:
        _sweep_matrix(rows, keys, (split, chosen, name))
    _sweep_paired(rows, keys, branches, (split, chosen, name))
    _sweep_footer(report)


def _sweep_paired(rows: list[dict[str, Any]], keys: list[str], branches: list[str], metric) -> None:
    """Method − reference method on the same seed (only when `method` is swept)."""
    paired = [r for r in rows if r.get("paired")]
    if not paired:
        return
    split, _, name = metric
    reference = paired[0]["paired"]["reference"]
    table = Table(title=f"paired difference vs {reference} (same seed) · {split} {name}, mean ± std")
    for key in keys:
        table.add_column(key)
    table.add_column("seeds", justify="right")
    for branch in branches:
        table.add_column(branch, justify="right")
    for r in paired:
        stats = r["paired"]["metrics"][split]
        cells = [_escape(r["labels"][k]) for k in keys] + [str(len(r["paired"]["seeds"]))]
        cells += [_signed(stats.get(b, {}).get(name)) for b in branches]
        table.add_row(*cells)
    console.print(table)


def _signed(stats: dict[str, Any] | None) -> str:
    if not stats or stats.get("mean") is None:
        return "—"
    std = stats.get("std")
    return f"{stats['mean']:+.4f}" + (f" ± {std:.4f}" if std is not None else "")


def _sweep_matrix(rows: list[dict[str, Any]], keys: list[str], metric: tuple[str, str, str]) -> None:
    """The two swept keys as rows × columns (the table form of the heatmap)."""
    ys = list(dict.fromkeys(r["labels"][keys[0]] for r in rows))
    xs = list(dict.fromkeys(r["labels"][keys[1]] for r in rows))
    cells = {(r["labels"][keys[0]], r["labels"][keys[1]]): r for r in rows}
    if len(cells) != len(ys) * len(xs):
        return  # random search: not a grid
    split, branch, name = metric
    table = Table(title=f"{split} {name} ({branch}): {keys[0]} ↓ × {keys[1]} →")
    table.add_column(f"{keys[0]} \\ {keys[1]}")
    for x in xs:
        table.add_column(_escape(x), justify="right")
    for y in ys:
        values = [_mean_std(cells[(y, x)]["metrics"][split].get(branch, {}).get(name)) for x in xs]
        table.add_row(_escape(y), *values)
    console.print(table)


def _sweep_footer(report: dict[str, Any]) -> None:
    t = report["trials"]
    scope = f" of this shard ({t['in_scope']} of {t['planned']})" if t["in_scope"] != t["planned"] else ""
    status = f"trials{scope}: {t['ok']} ok, {t['failed']} failed"
    info(status + (f", {t['unfinished']} not run yet" if t["unfinished"] else ""))
    for f in report["failed"][:10]:
        label, error = _escape(str(f.get("label"))), _escape(str(f["error"]))
        info(f"  [red]failed[/] {f['id']} {label} seed {f['seed']}: {error}")
    if len(report["failed"]) > 10:
        info(f"  ... and {len(report['failed']) - 10} more (see summary.json and trials/*.json)")
    info(f"[bold]{_escape(report['verdict'])}[/]")
    files = report["files"]
    info(f"summary: {_escape(files['csv'])}, {_escape(files['json'])}")
    info(f"plot: {_escape(files['plot'])}" if files["plot"] else report["plot_note"])


# ================================================================ igm landscape
# Rendering of `igm landscape`: a start line, a progress bar over grid points on a TTY (one
# line per checkpoint otherwise) and the sharpness table. Reads the dicts of igm_cli.landscape.


class LandscapeDisplay(EventDisplay):
    """Event sink of `igm landscape`."""

    def on_event(self, kind: str, payload: dict[str, Any]) -> None:
        """Render one landscape event."""
        from rich.markup import escape

        if kind == "start":
            self._start(payload)
        elif kind == "point":
            self.advance()
        elif kind == "hessian" and self.progress is None:
            info(f"  {escape(payload['name'])}: top Hessian eigenvalue by power iteration")
        elif kind == "checkpoint_end":
            r = payload
            info(
                f"  {escape(r['name'])}: centre loss {r['centre']['loss']:.4f}, max rise within r "
                f"{r['max_rise_within_r']:.4f}, top Hessian eigenvalue {r['hessian_top_eigenvalue']:.4g}"
            )

    def _start(self, p: dict[str, Any]) -> None:
        from rich.markup import escape

        total = len(p["names"]) * p["points"]
        resumed = f"; resuming, {p['done']} points already done" if p["done"] else ""
        resumed = "; every point already done, redrawing" if p["done"] >= total else resumed
        info(
            f"landscape [bold]{escape(p['out'])}[/]: {len(p['names'])} checkpoint(s) × {p['points']} "
            f"points on {p['samples']} samples{resumed}"
        )
        if p["done"] < total:
            self.start_progress("grid points", total, p["done"])


def landscape_table(result: dict[str, Any]) -> None:
    """Centre loss and sharpness per checkpoint, the verdict, and the files written."""
    from rich.markup import escape

    scope = "fused" if result["modality"] == "fused" else f"branch {result['modality']}"
    table = Table(
        title=f"loss landscape · {scope} · {result['split']} ({result['samples']} samples) · "
        f"{result['dims']}-D grid {result['grid']} over ±{result['span']:g} · r = {result['radius']:.3g}"
    )
    table.add_column("checkpoint", overflow="fold")  # names wrap; numbers are never cut short
    table.add_column("method", overflow="fold")
    for column in ("centre loss", "accuracy", "max rise ≤ r", "mean rise ≤ r", "λmax(H)"):
        table.add_column(column, justify="right", no_wrap=True, min_width=6)
    for r in result["checkpoints"]:
        h = r["hessian"]
        eig = f"{r['hessian_top_eigenvalue']:.4g}" + (
            "" if h["converged"] else f" (not converged, {h['iterations']})"
        )
        table.add_row(
            escape(r["name"]), r["label"], f"{r['centre']['loss']:.4f}", f"{r['centre']['accuracy']:.4f}",
            f"{r['max_rise_within_r']:.4f}", f"{r['mean_rise_within_r']:.4f}", eig,
        )  # fmt: skip
    console.print(table)
    info(f"[bold]flatter:[/] {escape(result['flattest']['verdict'])}")
    files = result["files"]
    plots = ", ".join(escape(files[k]) for k in ("contour", "surface") if k in files)
    info(f"written: {escape(files['json'])}, {escape(files['surfaces'])}" + (f", {plots}" if plots else ""))
    if not plots:
        info("no plots: matplotlib is not installed (pip install matplotlib)")
