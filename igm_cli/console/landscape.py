"""Rendering of `igm landscape`: progress events and the sharpness table."""

from __future__ import annotations

from typing import Any

from rich.table import Table

import igm_cli.console as base

from . import EventDisplay, info


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
    base.console.print(table)
    info(f"[bold]flatter:[/] {escape(result['flattest']['verdict'])}")
    files = result["files"]
    plots = ", ".join(escape(files[k]) for k in ("contour", "surface") if k in files)
    info(f"written: {escape(files['json'])}, {escape(files['surfaces'])}" + (f", {plots}" if plots else ""))
    if not plots:
        info("no plots: matplotlib is not installed (pip install matplotlib)")
