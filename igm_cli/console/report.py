"""Rendering of `igm report`: the paper's Table 3 per run, what had no figure and why, the files."""

from __future__ import annotations

from typing import Any

from rich.table import Table

import igm_cli.console as base

from . import _escape, info


def report_summary(result: dict[str, Any]) -> None:
    """Table 3 (fused and per-branch validation accuracy after each stage), notes, files written."""
    for run in result["runs"]:
        stages = run["table3"]
        table = Table()
        table.add_column("model")
        for row in stages:
            table.add_column(row["label"], justify="right")
        table.add_row("[bold]fused[/]", *(_acc(r["fused"]) for r in stages))
        branches = list(stages[0]["branches"]) if stages else []
        for m in branches:
            table.add_row(_escape(m), *(_acc(r["branches"].get(m)) for r in stages))
        if stages:
            info(f"Table 3 · {_escape(run['label'])}: validation accuracy after each stage")
            base.console.print(table)
        else:
            info(f"{_escape(run['name'])}: no stage has finished yet, so Table 3 is empty")
        for note in (run["spectra_note"], run["grad_cos_note"]):
            if note:
                info(f"{_escape(run['name'])}: {_escape(note)}")
    info("wrote " + ", ".join(_escape(f) for f in result["files"]))


def _acc(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
