"""The only user of rich: human output on stderr, progress on a TTY, one JSON document on stdout.

The shared pieces live here; each command family renders in its own submodule, re-exported
below so callers write `console.results_table(...)`. Submodules print through
`base.console` so that replacing `console.console` (tests) reaches them too.
"""

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


def _escape(text: str) -> str:
    """User text (labels, paths, error messages) printed literally, never as rich markup."""
    from rich.markup import escape

    return escape(text)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# Re-exported renderers (imported last: they use the definitions above).
from .analysis import eval_report, imbalance_table, robustness_table  # noqa: E402
from .landscape import LandscapeDisplay, landscape_table  # noqa: E402
from .report import report_summary  # noqa: E402
from .runs import runs_table  # noqa: E402
from .sweep import SweepDisplay, sweep_report  # noqa: E402
from .training import (  # noqa: E402
    TrainingDisplay,
    _pairs_cell,
    eval_table,
    gm_note,
    results_table,
    resume_auto_line,
    stage_table,
)

__all__ = [
    "METRIC_COLUMNS",
    "EventDisplay",
    "console",
    "emit_json",
    "error",
    "error_json",
    "info",
    "presets_table",
    "print_text",
    "eval_report",
    "imbalance_table",
    "robustness_table",
    "LandscapeDisplay",
    "landscape_table",
    "report_summary",
    "runs_table",
    "SweepDisplay",
    "sweep_report",
    "TrainingDisplay",
    "_pairs_cell",
    "eval_table",
    "gm_note",
    "resume_auto_line",
    "results_table",
    "stage_table",
]
