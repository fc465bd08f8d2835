"""Landscape figures in the style of Li et al. (2018, Fig. 1, 5): one panel per checkpoint.

`contour.png`: filled contours on one shared, logarithmic colour scale (2-D), or loss and
accuracy curves in shared axes (1-D); the dashed circle is the radius r of the rise
figures. `surface.png`: 3-D surfaces on a shared z range (2-D only). Drawn on bare
`Figure`s with the Agg canvas, so nothing needs a display and no pyplot state leaks.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

FLOOR = 1e-4  # lowest loss on the log colour scale


def plot_landscape(
    result: dict[str, Any], surfaces: list[dict[str, np.ndarray]], out: Path
) -> dict[str, str]:
    """Write the figures; returns {kind: path} (empty if matplotlib is not installed)."""
    try:
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        return {}
    if result["dims"] == 1:
        return {"contour": _curves(result, surfaces, out / "contour.png")}
    return {
        "contour": _contours(result, [s["loss"] for s in surfaces], out / "contour.png"),
        "surface": _surfaces(result, [s["loss"] for s in surfaces], out / "surface.png"),
    }


def panel_title(row: dict[str, Any], result: dict[str, Any]) -> str:
    """Name, method, centre loss/accuracy and both sharpness figures; ★ marks the flattest."""
    return (
        f"{row['name']} ({row['label']}){star(row['name'], result)}\n"
        f"centre loss {row['centre']['loss']:.4f}, accuracy {row['centre']['accuracy']:.1%}\n"
        f"max rise within r={result['radius']:.2g}: {row['max_rise_within_r']:.4f}; "
        f"top Hessian eig. {row['hessian_top_eigenvalue']:.3g}"
    )


def star(name: str, result: dict[str, Any]) -> str:
    """' ★ flattest' (both measures), ' ★ smallest rise' or ' ★ smallest top eig.' (one)."""
    best = result["flattest"]
    if len(result["checkpoints"]) == 1:
        return ""
    marks = [label for key, label in (("by_rise", "rise"), ("by_hessian", "top eig.")) if best[key] == name]
    return "" if not marks else " ★ flattest" if len(marks) == 2 else f" ★ smallest {marks[0]}"


def header(result: dict[str, Any], width: float) -> str:
    """What the figure shows and the verdict, wrapped to a figure `width` inches wide."""
    scope = "fused prediction" if result["modality"] == "fused" else f"branch {result['modality']}"
    text = (
        f"loss landscape of the {scope} · {result['split']} split ({result['samples']} samples) · "
        f"filter-normalised random directions, seed {result['seed']}"
    )
    if len(result["checkpoints"]) > 1:
        text += f"\nflatter: {result['flattest']['verdict']}"
    return "\n".join(textwrap.fill(line, int(width * 13)) for line in text.splitlines())


def shared_norm(losses: list[np.ndarray]):
    """One log colour scale for every panel, from the lowest to the highest loss."""
    from matplotlib.colors import LogNorm

    lo = max(min(float(np.nanmin(x)) for x in losses), FLOOR)
    hi = max(max(float(np.nanmax(x)) for x in losses), lo * 1.01)
    return LogNorm(lo, hi), np.geomspace(lo, hi, 21)


def _contours(result: dict[str, Any], losses: list[np.ndarray], path: Path) -> str:
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    n = len(losses)
    fig = Figure(figsize=(4.6 * n + 1.2, 5.4), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    alpha, beta = (np.asarray(a) for a in (result["axes"]["alpha"], result["axes"]["beta"]))
    norm, levels = shared_norm(losses)
    for ax, row, loss in zip(axes, result["checkpoints"], losses, strict=True):
        z = np.clip(loss.T, levels[0], levels[-1])  # (β, α): rows are β for contourf
        filled = ax.contourf(alpha, beta, z, levels=levels, norm=norm, cmap="viridis", extend="neither")
        ax.contour(alpha, beta, z, levels=levels[::2], norm=norm, colors="white", linewidths=0.4, alpha=0.6)
        ax.add_patch(Circle((0, 0), result["radius"], fill=False, ls="--", lw=1.2, color="white"))
        ax.plot(0, 0, marker="+", color="red", markersize=12, mew=2)
        ticks = np.linspace(alpha[0], alpha[-1], 5)
        ax.set(xlabel="α (direction 1)", ylabel="β (direction 2)", aspect="equal", xticks=ticks, yticks=ticks)
        ax.set_title(panel_title(row, result), fontsize=9)
    bar = fig.colorbar(filled, ax=list(axes), shrink=0.85, label="loss (log scale, shared by all panels)")
    bar.ax.minorticks_off()
    bar.set_ticks(levels[::4], labels=[f"{v:.3g}" for v in levels[::4]])
    note = "\n+ the checkpoint · dashed circle: radius r of the rise"
    fig.suptitle(header(result, fig.get_figwidth()) + note, fontsize=10)
    fig.savefig(path, dpi=110)
    return str(path)


def _surfaces(result: dict[str, Any], losses: list[np.ndarray], path: Path) -> str:
    from matplotlib import cm
    from matplotlib.figure import Figure

    n = len(losses)
    fig = Figure(figsize=(5.2 * n, 6.0))  # constrained layout misplaces 3-D axes; placed by hand
    fig.subplots_adjust(left=0.02, right=0.95, bottom=0.02, top=0.80, wspace=0.08)
    alpha, beta = np.meshgrid(result["axes"]["alpha"], result["axes"]["beta"], indexing="ij")
    norm, levels = shared_norm(losses)
    zmax, span = levels[-1], result["span"]
    for k, (row, loss) in enumerate(zip(result["checkpoints"], losses, strict=True)):
        ax = fig.add_subplot(1, n, k + 1, projection="3d")
        colours = cm.viridis(norm(np.clip(loss, levels[0], zmax)))
        ax.plot_surface(alpha, beta, loss, facecolors=colours, rstride=1, cstride=1, linewidth=0, shade=False)
        ax.set(xlabel="α", ylabel="β", zlim=(0, zmax), xticks=[-span, 0, span], yticks=[-span, 0, span])
        ax.set_zlabel("loss", labelpad=8)
        ax.set_box_aspect(None, zoom=0.85)
        ax.view_init(elev=28, azim=-55)
        ax.set_title(panel_title(row, result), fontsize=8, pad=0)
    fig.suptitle(header(result, fig.get_figwidth()) + "\nsame z range and colours in every panel", fontsize=9)
    fig.savefig(path, dpi=110)
    return str(path)


def _curves(result: dict[str, Any], surfaces: list[dict[str, np.ndarray]], path: Path) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.8), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    alpha = np.asarray(result["axes"]["alpha"])
    for row, surface in zip(result["checkpoints"], surfaces, strict=True):
        label = (
            f"{row['name']} ({row['label']}): centre {row['centre']['loss']:.4f}, "
            f"max rise {row['max_rise_within_r']:.4f}, eig {row['hessian_top_eigenvalue']:.3g}"
        )
        (line,) = loss_ax.plot(alpha, surface["loss"], marker=".", label=label)
        acc_ax.plot(alpha, surface["accuracy"], marker=".", color=line.get_color())
    for ax in (loss_ax, acc_ax):
        ax.axvspan(-result["radius"], result["radius"], color="grey", alpha=0.15, lw=0)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("α (filter-normalised direction)")
    loss_ax.set(ylabel="loss", title=f"loss (shaded: |α| ≤ r = {result['radius']:.2g})")
    acc_ax.set(ylabel="accuracy", title="accuracy")
    fig.legend(loc="outside lower center", fontsize=8, ncols=1)
    fig.suptitle(header(result, fig.get_figwidth()), fontsize=10)
    fig.savefig(path, dpi=110)
    return str(path)
