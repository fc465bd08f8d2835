"""The gradient-change cosine histogram of a run (paper Figure 1), from its stage records.

Each stage record's `grad_cos_hist` holds fixed-bin counts of cos(∇W, ∇W') per layer
(engine/grad_cosine.py). Drawn on a log(1 − cos) axis with cos rising to the right,
because IGM's cosines crowd just below 1 while MLA's projector spreads them far lower.
"""

from __future__ import annotations

from typing import Any

from .curves import stage_label
from .source import RunData


def histograms(run: RunData) -> list[dict[str, Any]]:
    """Per stage with a histogram: label, edges, counts pooled over layers and per layer."""
    rows = []
    for record in run.stages:
        hist = record.get("grad_cos_hist")
        if not isinstance(hist, dict) or not hist.get("counts"):
            continue
        edges, counts = hist["edges"], hist["counts"]
        pooled = [sum(col) for col in zip(*counts.values(), strict=True)]
        rows.append(
            {
                "stage": record["stage"],
                "label": stage_label(run, record["stage"], record["active"]),
                "source": record.get("source"),
                "projected": bool(record.get("gm_removed_share")),  # a T acted (else T = I)
                "edges": edges,
                "pooled": pooled,
                "layers": counts,
                "summary": {key: summary(edges, c) for key, c in counts.items()},
            }
        )
    return rows


def summary(edges: list[float], counts: list[int]) -> dict[str, Any]:
    """Steps, the share left unchanged (last bin), the share below 0.99, the bin of the median."""
    total = sum(counts)
    if total == 0:
        return {"steps": 0, "unchanged": None, "below_0.99": None, "median_bin": None}
    below = sum(c for c, hi in zip(counts, edges[1:], strict=True) if hi <= 0.99 + 1e-12)
    running, median = 0, None
    for i, c in enumerate(counts):
        running += c
        if running * 2 >= total:
            median = [edges[i], edges[i + 1]]
            break
    return {
        "steps": total,
        "unchanged": counts[-1] / total,
        "below_0.99": below / total,
        "median_bin": median,
    }


def no_histogram_reason(run: RunData) -> str | None:
    """Why a run has no histogram, said plainly (None when it has one)."""
    if histograms(run):
        return None
    if run.method == "mla" and run.setting("mla.projection") != "paper":
        projection = run.setting("mla.projection")
        return f"mla.projection={projection}: no gradient projection ran, so there is no histogram"
    if run.method not in ("igm", "mie", "mla"):
        return f"method {run.method} does not modify gradients, so there is no gradient-change histogram"
    if not run.stages:
        return "no stage has finished yet (histograms are written at the end of each stage)"
    return "this run's stage records have no grad_cos_hist (recorded by newer versions of igm)"


def plot_cosine(runs: list[RunData], tables: list[list[dict[str, Any]]], path) -> None:
    """grad_cosine.png: per run the share of steps per cosine bin, one line per stage (layers pooled)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(runs) + 0.6, 4.6), layout="constrained")
    axes = fig.subplots(1, len(runs), squeeze=False, sharey=True)[0]
    for ax, run, rows in zip(axes, runs, tables, strict=True):
        if not rows:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{run.label}\n\n{_wrap(no_histogram_reason(run))}", ha="center", va="center")
            continue
        for row in rows:
            d_edges, shares = distance_axis(row["edges"], row["pooled"])
            source = ""
            if run.method != "mla" and row["source"]:
                source = f" (T from {row['source']})" if row["projected"] else " (T = I)"
            ax.stairs(shares, d_edges, lw=1.6, label=f"{row['label']}{source}")
        ticks = np.array([10**-6.5, 1e-6, 1e-4, 1e-2, 1e-1, 0.5, 2.0])
        labels = ["1", "1−10⁻⁶", "0.9999", "0.99", "0.9", "0.5", "−1"]
        ax.set(xscale="log", xlim=(2.0, 1e-7), xlabel="cos(∇W, ∇W′)  (log scale in 1 − cos)")
        ax.set_xticks(ticks, labels, fontsize=8)
        ax.minorticks_off()
        ax.set_ylabel("share of steps × layers")
        ax.set_title(f"{run.label}\n{_what(run)}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.savefig(path, dpi=110)


def distance_axis(edges: list[float], counts: list[int]) -> tuple[list[float], list[float]]:
    """Bin edges as 1 − cos, ascending (the last bin [1 − 10⁻⁶, 1] drawn from 10⁻⁷), and shares."""
    total = max(1, sum(counts))
    d = [1.0 - e for e in reversed(edges)]
    d[0] = 1e-7  # log axis: "unchanged" (1 − cos = 0) gets the decade below the last edge
    return d, [c / total for c in reversed(counts)]


def _what(run: RunData) -> str:
    if run.method == "mla":
        return "cos(G, G·Pᵀ) of the shared head per step"
    return f"cos(∇W, ∇W·T) of the paired head layers per step (τ={run.setting('gm.tau')})"


def _wrap(text: str | None, width: int = 48) -> str:
    import textwrap

    return textwrap.fill(text or "", width)
