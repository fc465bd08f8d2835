"""Rendering of `igm sweep`: a line per finished trial (a bar on a TTY) and the summary tables.

Everything here reads the plain dicts built by igm_cli.sweep.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

import igm_cli.console as base

from . import EventDisplay, _count, _escape, info


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
    base.console.print(table)
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
    base.console.print(table)


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
    base.console.print(table)


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
