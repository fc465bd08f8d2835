"""Rendering of `igm train` and `igm eval`: events, results, stage and evaluation tables."""

from __future__ import annotations

from typing import Any

from rich.table import Table

import igm_cli.console as base

from . import METRIC_COLUMNS, EventDisplay, _count, _escape, info
from .gm_layers import beyond_head, gm_layer_table, short_layer, span


class TrainingDisplay(EventDisplay):
    """Event sink for the trainer: a progress bar on a TTY, one line per epoch otherwise."""

    selection_split = "val"  # run_start says which split selects (recipe reference: test)

    def on_event(self, kind: str, payload: dict[str, Any]) -> None:
        """Render one trainer event."""
        if kind == "resume_auto":  # said even under --quiet: it is what the command decided
            info(resume_auto_line(payload), markup=False)
        if self.quiet:
            return
        if kind == "run_start":
            self.selection_split = payload.get("selection_split", "val")
            verb = "resuming" if payload["resumed"] else "run"
            threads = payload.get("threads")
            info(
                f"{verb} [bold]{_escape(payload['run_dir'])}[/]"
                + (f" ({_count(threads, 'thread')})" if threads else "")
                + (f" on {payload['world_size']} processes (DDP)" if payload.get("world_size", 1) > 1 else "")
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
            split = self.selection_split
            info(f"  epoch {payload['epochs_done']:>3}  loss {loss:.4f}  {split} acc: {parts}{mark}")
        elif kind == "stage_end":
            removed = payload["gm_removed_share"]
            if removed:
                share = ", ".join(f"{short_layer(k)} {v:.1%}" for k, v in removed.items())
                info(f"  GM removed this share of the gradient norm: {share}")


def gm_note(payload: dict[str, Any]) -> str:
    """What GM does in a stage, as true as the trainer's stage_start event allows."""
    source = payload.get("source")
    if not payload.get("gm", True) or source is None:
        return "no GM"
    if payload["paired"]:
        return f"T from {source} on {', '.join(short_layer(n) for n in payload['paired'])}"
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
    selection = results["selection"]
    split = selection.get("split", "val")
    recipe = " · recipe reference" if results.get("recipe") == "reference" else ""
    chosen = f"selected epoch {selection['epoch']} by {split} {selection['metric']}"
    if split == "test":  # the published protocol: say it where the numbers are
        chosen += " (the TEST split selected the model)"
    rho = results.get("sam_rho", 0)
    table = Table(title=f"{results['preset']} · {results['method']}{recipe} · SAM ρ {rho:g} · {chosen}")
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
    base.console.print(table)
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
    per_layer = beyond_head(stages)  # many layers: compact cells here, details in their own table
    for s in stages:
        removed = ", ".join(f"{k} {v:.1%}" for k, v in s["gm_removed_share"].items()) or "— (no T)"
        traces = "; ".join(
            f"{k} {v:.3f}" for layers in s["T_trace_ratio"].values() for k, v in layers.items()
        )
        flat = "; ".join(
            f"{k}: {v}" for layers in s.get("T_degenerate", {}).values() for k, v in layers.items()
        )
        traces = "; ".join(part for part in (traces, flat and f"degenerate {flat}") if part)
        if per_layer:
            removed = span(s["gm_removed_share"], ".1%") or "— (no T)"
            compact = "; ".join(span(layers, ".3f") for layers in s["T_trace_ratio"].values() if layers)
            traces = "; ".join(part for part in (compact, flat and f"degenerate {flat}") if part)
        sam = s.get("sam_realized")
        sam = (
            s.get("sam_note", "off")
            if sam is None
            else f"{sam['moved_share']:.1%} of weights, ‖ε‖/‖θ‖ {sam['relative_size']:.1e}"
        )
        pairs = _pairs_cell(s.get("gm_pairs"))
        source = s["source"] if s["gm_removed_share"] and s.get("source") else "—"  # the T that acted
        table.add_row(str(s["stage"]), "+".join(s["active"]), source, pairs, removed, traces or "—", sam)
    base.console.print(table)
    if per_layer:
        gm_layer_table(stages)


def _pairs_cell(pairs: dict[str, str | None] | None) -> str:
    """`head.1 ← text.head.0, …; none: head.0` (which layer got which modality's T)."""
    if not pairs:
        return "—"
    if all(src and src.split(".", 1)[-1] == layer for layer, src in pairs.items()):
        return "same layers"  # the common case (equal heads): every layer got its namesake's T
    got = ", ".join(f"{short_layer(layer)} ← {short_layer(src)}" for layer, src in pairs.items() if src)
    none = ", ".join(short_layer(layer) for layer, src in pairs.items() if not src)
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
    base.console.print(table)
