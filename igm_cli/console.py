"""The only user of rich: human output on stderr, progress on a TTY, one JSON document on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True, width=None if sys.stderr.isatty() else 110)
METRIC_COLUMNS = ("accuracy", "macro_f1", "map")


def error(message: str) -> None:
    """One line naming the problem."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def info(message: str) -> None:
    """A line of human output."""
    console.print(message, highlight=False, soft_wrap=True)


def emit_json(document: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


class TrainingDisplay:
    """Event sink for the trainer: a progress bar on a TTY, one line per epoch otherwise."""

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
        """Render one trainer event."""
        if self.quiet:
            return
        if kind == "run_start":
            verb = "resuming" if payload["resumed"] else "run"
            info(f"{verb} [bold]{payload['run_dir']}[/]")
            if console.is_terminal:
                total = payload["total_epochs"] * payload["batches_per_epoch"]
                self.progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                    transient=True,
                )
                self.task = self.progress.add_task("training", total=total)
                done = (
                    payload["state"]["epochs_done"] * payload["batches_per_epoch"] + payload["state"]["batch"]
                )
                self.progress.update(self.task, completed=done)
                self.progress.start()
        elif kind == "step" and self.progress is not None:
            self.progress.advance(self.task)
        elif kind == "stage_start":
            source = payload["source"]
            gm = (
                f"T from {source} on {', '.join(payload['paired'])}"
                if payload["paired"]
                else (f"T = I (no T of {source} yet)" if source else "no GM")
            )
            info(
                f"stage {payload['stage']}: train {'+'.join(payload['active'])} "
                f"for {payload['epochs']} epochs; {gm}"
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


def results_table(results: dict[str, Any]) -> None:
    """Per-branch and fused metrics, validation (selected epoch) beside test."""
    table = Table(
        title=f"{results['preset']} · {results['method']} · selected epoch "
        f"{results['selection']['epoch']} by val {results['selection']['metric']}"
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
        "share of ‖∇W‖ removed by T",
        "trace(T)/d of new T",
        "SAM moved",
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
        table.add_row(str(s["stage"]), "+".join(s["active"]), str(s["source"]), removed, traces or "—", sam)
    console.print(table)


def eval_table(result: dict[str, Any]) -> None:
    """Metrics of `igm eval`."""
    table = Table(
        title=f"{result['checkpoint']} · {result['split']} ({result['samples']}) · fusion {result['fusion']}"
    )
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
