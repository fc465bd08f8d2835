"""Rendering of `igm runs`: one table row per run, then a line per run that needs a word.

Reads the plain dicts built by igm_cli.run_table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

import igm_cli.console as base

from . import _count, _escape, info

STATUS_STYLE = {"finished": "green", "running": "cyan", "resumable": "yellow", "failed": "red"}


def runs_table(rows: list[dict[str, Any]], runs_dir: Path) -> None:
    """The run table: val/test are fused accuracy; branches shows test accuracy (val while unfinished)."""
    if not rows:
        info(f"no runs in {_escape(str(runs_dir))}")
        return
    table = Table(
        title=f"{_count(len(rows), 'run')} in {_escape(str(runs_dir))}",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        caption="val, test: fused accuracy at the selected epoch; branches: test (val if unfinished)",
    )
    for column, justify in (
        ("run", "left"),
        ("status", "left"),
        ("method", "left"),
        ("overrides", "left"),
        ("epoch", "right"),
        ("val", "right"),
        ("test", "right"),
        ("branches", "left"),
        ("seconds", "right"),
    ):
        table.add_column(
            column,
            justify=justify,
            overflow="fold",
            no_wrap=column in ("run", "status", "branches"),
            min_width=20 if column == "overrides" else None,
        )
    for row in rows:
        style = STATUS_STYLE.get(row["status"], "magenta")
        table.add_row(
            _escape(row["name"]),
            f"[{style}]{row['status']}[/]",
            _escape(row["method"] or "—"),
            _overrides_cell(row),
            _epoch_cell(row),
            _number(row["val"]),
            _number(row["test"]),
            _branches_cell(row),
            _number(row["seconds"], ".1f"),
        )
    base.console.print(table)
    for row in rows:
        if row["note"] and row["status"] != "finished":
            info(f"  {_escape(row['name'])} ({row['status']}): {_escape(row['note'])}")


def _overrides_cell(row: dict[str, Any]) -> str:
    from igm_cli.run_info import format_overrides

    if row["overrides"] is None:
        return "[dim]unknown[/]" if row["status"] != "unreadable" else ""
    return _escape("\n".join(format_overrides(row["overrides"]))) or "[dim]none[/]"


def _epoch_cell(row: dict[str, Any]) -> str:
    if row["epoch"] is None:
        return "—" if row["status"] != "unreadable" else ""
    return f"{row['epoch']}/{row['epochs']}" if row["epochs"] else str(row["epoch"])


def _branches_cell(row: dict[str, Any]) -> str:
    parts = []
    for branch, scores in row["branches"].items():
        value = scores["test"] if scores.get("test") is not None else scores.get("val")
        if value is not None:
            parts.append(f"{branch} {value:.4f}")
    return _escape("\n".join(parts))


def _number(value: float | None, spec: str = ".4f") -> str:
    return "—" if value is None else format(value, spec)
