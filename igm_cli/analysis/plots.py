"""Figures of `igm eval`: robustness curves (a panel per modality and kind) and confusion matrices.

Drawn on bare `Figure`s with the Agg canvas (no display, no pyplot state), returned as PNG
bytes so the caller writes them atomically.
"""

from __future__ import annotations

import io
import textwrap
from typing import Any

import numpy as np

KINDS = {
    "missing": ("missing", "share r of samples without {m}"),
    "noise": ("noisy", "noise level σ ({how})"),
}


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def line_name(doc: dict[str, Any]) -> str:
    """The legend entry of a checkpoint: its name and method label."""
    return f"{doc['name']} ({doc['label']})"


def _noise_how(docs: list[dict[str, Any]], modality: str) -> str:
    kinds = {
        d["robustness"]["modalities"][modality]["noise"]["corruption"]["kind"]
        for d in docs
        if modality in d["robustness"]["modalities"]
    }
    return "token swap probability" if all(k.startswith("token") for k in kinds) else "× training-set std"


def y_floor(docs: list[dict[str, Any]]) -> float:
    """One lower y limit for every panel, a little below the lowest point (in 0.05 steps).

    Differences between checkpoints stay visible and the panels comparable.
    """
    lowest = min(
        min(curves[kind]["accuracy"])
        for d in docs
        for curves in d["robustness"]["modalities"].values()
        for kind in KINDS
    )
    return max(0.0, np.floor((lowest - 0.03) / 0.05) * 0.05)


def robustness_png(result: dict[str, Any]) -> bytes:
    """Rows missing / noisy, a column per modality, a line per checkpoint; chance dotted."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    docs = result["checkpoints"]
    modalities = list(dict.fromkeys(m for d in docs for m in d["robustness"]["modalities"]))
    cols = len(modalities)
    fig = Figure(figsize=(max(4.2 * cols, 7.5), 8.2), layout="constrained")
    axes = np.asarray(fig.subplots(2, cols, squeeze=False, sharey=True))
    colours = [f"C{i % 10}" for i in range(len(docs))]
    chances = {1 / len(d["imbalance"]["confusion_matrix"]["classes"]) for d in docs}
    chance = chances.pop() if len(chances) == 1 else None
    low = y_floor(docs)
    for row, (kind, (word, xlabel)) in enumerate(KINDS.items()):
        for col, m in enumerate(modalities):
            ax = axes[row, col]
            for doc, colour in zip(docs, colours, strict=True):
                curves = doc["robustness"]["modalities"].get(m)
                if curves is None:
                    continue
                curve = curves[kind]
                summary = curve["summary"]["accuracy"]
                ax.plot(
                    doc["robustness"]["levels"],
                    curve["accuracy"],
                    marker="o",
                    markersize=3,
                    color=colour,
                    label=f"area {summary['area']:.3f}, drop@0.5 {summary['drop_at_0.5']:+.3f}",
                )
            if chance is not None and chance >= low:
                ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance (1/C)")
            ax.set_title(f"{m} {word}", fontsize=11, fontweight="bold")
            ax.set_xlabel(xlabel.format(m=m, how=_noise_how(docs, m)))
            ax.set_xlim(0, 1)
            ax.set_ylim(low, 1.005)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("fused accuracy")
            ax.legend(fontsize=7, loc="best", title="area, drop from 0 to 0.5", title_fontsize=7)
    handles = [Line2D([], [], color=c, marker="o", markersize=3) for c in colours]
    fig.legend(handles, [line_name(d) for d in docs], loc="outside lower center", ncols=min(len(docs), 3))
    rules = "; ".join(sorted({d["robustness"]["missing_means"] for d in docs}))
    title = (
        f"Fused accuracy on the {docs[0]['split']} split when one modality is missing (top) or noisy (bottom)"
        f" · missing = {rules} · same masks and noise for every checkpoint (seed {result.get('seed', 0)})"
        + (f" · chance 1/C = {chance:.3g} is below the axis" if chance is not None and chance < low else "")
    )
    fig.suptitle("\n".join(textwrap.wrap(title, int(fig.get_figwidth() * 13))), fontsize=10)
    return _png(fig)


def confusion_png(result: dict[str, Any]) -> bytes:
    """A panel per checkpoint: the fused confusion matrix, rows normalised per true class, counts written."""
    from matplotlib.figure import Figure

    docs = result["checkpoints"]
    fig = Figure(figsize=(5.2 * len(docs), 5.0), layout="constrained")
    axes = np.atleast_1d(np.asarray(fig.subplots(1, len(docs), squeeze=False))).ravel()
    image = None
    for ax, doc in zip(axes, docs, strict=True):
        cm = doc["imbalance"]["confusion_matrix"]
        counts = np.asarray(cm["counts"], dtype=float)
        shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        classes = cm["classes"]
        ticks = range(len(classes))
        ax.set_xticks(list(ticks), classes, rotation=90 if max(map(len, classes)) > 3 else 0, fontsize=8)
        ax.set_yticks(list(ticks), classes, fontsize=8)
        if len(classes) <= 15:
            for (i, j), n in np.ndenumerate(counts):
                ax.text(
                    j,
                    i,
                    f"{int(n)}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if shares[i, j] > 0.5 else "black",
                )
        ax.set_xlabel("predicted class (fused)")
        ax.set_ylabel("true class")
        acc = doc["metrics"]["fused"]["accuracy"]
        ax.set_title(f"{line_name(doc)}\nfused accuracy {acc:.3f} on {doc['split']}", fontsize=9)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="share of the true class")
    return _png(fig)
