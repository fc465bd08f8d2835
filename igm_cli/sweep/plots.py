"""Sweep plots (matplotlib, Agg): a heatmap for two swept keys, a line plot for one.

The heatmap is the shape of the paper's Figure 3 (τ × ρ); the line plot shows error bars
for every branch beside the fused model.

Drawn on a bare `Figure`, so no pyplot state leaks; cells read "mean ± std" and the best
setting is outlined, so the answer is visible without the table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .grid import format_value
from .summary import best_row, metric_of, verdict

Metric = tuple[str, str, str]


def plot_summary(
    rows: list[dict[str, Any]], keys: list[str], metric: Metric, path: Path, title: str
) -> tuple[str | None, str]:
    """Draw summary.png when one or two keys are swept; returns (path or None, a note)."""
    scored = [r for r in rows if (m := metric_of(r, metric)) and m["mean"] is not None]
    if not scored:
        return None, "no plot: no finished trial has this metric"
    if not keys or len(keys) > 2:
        why = "only seeds are swept" if not keys else f"{len(keys)} keys are swept (plots show 1 or 2)"
        return None, f"no plot: {why}; see summary.csv"
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None, "no plot: matplotlib is not installed (pip install matplotlib)"
    fig = Figure(figsize=(7.5, 5.5) if len(keys) == 2 else (7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    if len(keys) == 1 and not _numeric(axis_values(scored, keys[0])):
        _bars(ax, scored, keys[0], metric)  # e.g. method: categories side by side, not a line
    elif len(keys) == 1:
        _line(ax, scored, keys[0], metric)
    elif len(rows) == len(axis_values(rows, keys[0])) * len(axis_values(rows, keys[1])):
        _heatmap(fig, ax, rows, keys, metric)  # failed settings are grey cells
    else:  # random search: settings are scattered, not on a grid
        _scatter(fig, ax, scored, keys, metric)
    spread = (
        "mean ± std over seeds"
        if any(metric_of(r, metric)["std"] is not None for r in scored)
        else "one seed"
    )
    lines = [title, f"{metric_label(metric)}, {spread}", *verdict(scored, metric).split("; ")]
    ax.set_title("\n".join(lines), fontsize=10)
    fig.savefig(path, dpi=120)
    return str(path), f"plot: {path}"


def metric_label(metric: Metric) -> str:
    """`test accuracy (fused)`."""
    split, branch, name = metric
    return f"{split} {name} ({branch})"


def axis_values(rows: list[dict[str, Any]], key: str) -> list[Any]:
    """Distinct values of a key: numbers ascending, anything else in sweep order."""
    values = list({format_value(r["values"][key]): r["values"][key] for r in rows}.values())
    if all(isinstance(v, int | float) for v in values):
        return sorted(values)
    return values


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _spans_decades(values: list[Any]) -> bool:
    positive = [v for v in values if v > 0] if _numeric(values) else []
    return len(positive) >= 2 and max(positive) / min(positive) >= 100


def tick_label(value: Any, decades: bool) -> str:
    """Mathtext powers of ten (`$10^{-3}$`) when values span decades, else the plain value."""
    if not decades or not _numeric([value]) or value <= 0:
        return format_value(value)
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = value / 10**exponent
    if abs(mantissa - 1) < 1e-6:
        return f"$10^{{{exponent}}}$"
    return f"${mantissa:g}\\times10^{{{exponent}}}$"


def _heatmap(fig, ax, rows: list[dict[str, Any]], keys: list[str], metric: Metric) -> None:
    import matplotlib
    import numpy as np

    ys, xs = axis_values(rows, keys[0]), axis_values(rows, keys[1])
    cell = {(format_value(r["values"][keys[0]]), format_value(r["values"][keys[1]])): r for r in rows}
    grid = [[cell[(format_value(y), format_value(x))] for x in xs] for y in ys]
    stats = [[metric_of(r, metric) or {"mean": None, "std": None} for r in line] for line in grid]
    means = np.array([[s["mean"] for s in line] for line in stats], dtype=float)  # None → nan
    colours = matplotlib.colormaps["viridis_r" if metric[2] == "loss" else "viridis"].with_extremes(
        bad="lightgrey"
    )
    image = ax.imshow(np.ma.masked_invalid(means), cmap=colours, origin="lower", aspect="auto")
    fig.colorbar(image, ax=ax, label=metric_label(metric))
    best = best_row(rows, metric)
    for i, line in enumerate(stats):
        for j, s in enumerate(line):
            text = _cell_text(s, grid[i][j])
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color=_ink(image, s))
            if grid[i][j] is best:
                ax.add_patch(_outline(j, i))
    ax.set_xticks(range(len(xs)), [tick_label(v, _spans_decades(xs)) for v in xs])
    ax.set_yticks(range(len(ys)), [tick_label(v, _spans_decades(ys)) for v in ys])
    ax.set_xlabel(keys[1])
    ax.set_ylabel(keys[0])


def _cell_text(stats: dict[str, Any], row: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "failed" if row["seeds_failed"] else "—"
    return f"{stats['mean']:.3f}" + (f"\n±{stats['std']:.3f}" if stats["std"] is not None else "")


def _ink(image, stats: dict[str, Any]) -> str:
    """White text on dark cells, black on light ones."""
    if stats["mean"] is None:
        return "black"
    red, green, blue, _ = image.cmap(image.norm(stats["mean"]))
    return "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.5 else "black"


def _outline(x: float, y: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5)


def _line(ax, rows: list[dict[str, Any]], key: str, metric: Metric) -> None:
    xs = axis_values(rows, key)
    by_x = {format_value(r["values"][key]): r for r in rows}
    positions = xs if _numeric(xs) else list(range(len(xs)))
    split, chosen, name = metric
    branches = [b for b in dict.fromkeys(b for r in rows for b in r["metrics"][split]) if b != chosen]
    branches.append(chosen)
    for branch in branches:
        stats = [metric_of(by_x[format_value(x)], (split, branch, name)) for x in xs]
        points = [(p, s) for p, s in zip(positions, stats, strict=True) if s and s["mean"] is not None]
        ax.errorbar(
            [p for p, _ in points],
            [s["mean"] for _, s in points],
            yerr=[s["std"] or 0.0 for _, s in points],
            marker="o",
            capsize=4,
            linewidth=2.5 if branch == chosen else 1.2,
            alpha=1.0 if branch == chosen else 0.6,
            label=branch,
        )
    _scale_axis(ax, "x", xs, positions)
    ax.set_xlabel(key)
    ax.set_ylabel(f"{split} {name}")
    ax.grid(alpha=0.3)
    ax.legend(title="branch")


def _bars(ax, rows: list[dict[str, Any]], key: str, metric: Metric) -> None:
    """Grouped bars: one group per value of `key` (e.g. each method), one bar per branch and fused."""
    split, chosen, name = metric
    branches = [b for b in dict.fromkeys(b for r in rows for b in r["metrics"][split]) if b != chosen]
    branches.append(chosen)
    width = 0.8 / len(branches)
    for i, branch in enumerate(branches):
        stats = [metric_of(r, (split, branch, name)) for r in rows]
        xs = [g + (i - (len(branches) - 1) / 2) * width for g in range(len(rows))]
        means = [s["mean"] if s and s["mean"] is not None else math.nan for s in stats]
        errs = [(s["std"] or 0.0) if s else 0.0 for s in stats]
        bars = ax.bar(xs, means, width, yerr=errs, capsize=3, label=branch,
                      edgecolor="black" if branch == chosen else "none")  # fmt: skip
        for bar, mean, err in zip(bars, means, errs, strict=True):
            if not math.isnan(mean):  # the value above its error bar
                ax.annotate(f"{mean:.3f}", (bar.get_x() + bar.get_width() / 2, mean + err), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)  # fmt: skip
    stats = [metric_of(r, (split, b, name)) for r in rows for b in branches]
    finite = [s["mean"] for s in stats if s and s["mean"] is not None]
    if finite and name != "loss":
        low = min(finite)
        ax.set_ylim(max(0.0, low - 0.1 * (1 - low) - 0.02), 1.0)
    ax.set_xticks(range(len(rows)), [r["labels"][key] for r in rows])
    ax.set_xlabel(key)
    ax.set_ylabel(f"{split} {name}")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(title="branch", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _scatter(fig, ax, rows: list[dict[str, Any]], keys: list[str], metric: Metric) -> None:
    xs = [r["values"][keys[1]] for r in rows]
    ys = [r["values"][keys[0]] for r in rows]
    means = [metric_of(r, metric)["mean"] for r in rows]
    points = ax.scatter(xs, ys, c=means, cmap="viridis_r" if metric[2] == "loss" else "viridis", s=80)
    fig.colorbar(points, ax=ax, label=metric_label(metric))
    best = best_row(rows, metric)
    ax.scatter(
        [best["values"][keys[1]]], [best["values"][keys[0]]], s=260, facecolors="none", edgecolors="red"
    )
    for axis, values in (("x", xs), ("y", ys)):
        if _spans_decades(values):
            getattr(ax, f"set_{axis}scale")("log" if min(values) > 0 else "symlog")
    ax.set_xlabel(keys[1])
    ax.set_ylabel(keys[0])


def _scale_axis(ax, axis: str, values: list[Any], positions: list[Any]) -> None:
    """Log scale when positive values span decades (symlog if 0 is among them); ticks at the values."""
    decades = _spans_decades(values)
    if decades:
        positive = [v for v in values if v > 0]
        if min(values) > 0:
            getattr(ax, f"set_{axis}scale")("log")
        else:
            getattr(ax, f"set_{axis}scale")("symlog", linthresh=min(positive))
    if len(values) <= 12 or not _numeric(values):
        getattr(ax, f"set_{axis}ticks")(positions, [tick_label(v, decades) for v in values])
        getattr(ax, f"set_{axis}ticks")([], minor=True)
