"""Singular values of every covariance Ȳ and every T in a checkpoint (paper Figure 5a, Eq. 3–4).

Ȳ is symmetric PSD, so its singular values are the absolute eigenvalues: a float64
`eigvalsh` (no SVD, fine for a 4608² conv covariance too). T's lie in [e^−τ, 1]. Any
number of layers per modality (head Linears, conv layers under `gm.scope: fraction`).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .source import RunData

RANK_TOLERANCE = 1e-12  # singular values below this share of the largest are zero (not drawn)


def natural_key(name: str) -> list[Any]:
    """`head.10` after `head.2`: digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Descending singular values of a symmetric matrix, float64."""
    m = matrix.detach().to(torch.float64)
    return torch.linalg.eigvalsh((m + m.T) / 2).abs().sort(descending=True).values


def spectra(run: RunData) -> list[dict[str, Any]]:
    """Per (modality, layer): d, Ȳ's and T's singular values with their max and mean."""
    rows: dict[str, dict[str, Any]] = {}
    for key, tensor in run.tensors.items():
        parts = key.split(".", 3)  # gm . T|cov . modality . layer
        if len(parts) != 4 or parts[0] != "gm" or parts[1] not in ("T", "cov") or tensor.dim() != 2:
            continue
        _, kind, modality, layer = parts
        s = singular_values(tensor)
        row = rows.setdefault(f"{modality}.{layer}", {"modality": modality, "layer": layer, "d": s.numel()})
        row[kind] = {"max": float(s[0]), "mean": float(s.mean()), "min": float(s[-1]), "values": s.tolist()}
        if kind == "cov":  # numerical rank: Ȳ sums one outer product per batch
            row[kind]["rank"] = int((s > s[0] * RANK_TOLERANCE).sum()) if s[0] > 0 else 0
    position = {m: i for i, m in enumerate(run.modalities)}
    order = sorted(rows, key=lambda k: (position.get(rows[k]["modality"], len(position)), natural_key(k)))
    return [rows[k] for k in order]


def no_spectra_reason(run: RunData) -> str | None:
    """Why a run has no spectrum to show (None when it has one)."""
    if run.checkpoint is None:
        return "no checkpoint yet (the run ended before its first epoch)"
    if any(k.startswith("gm.") for k in run.tensors):
        return None
    if run.method not in ("igm", "mie"):
        return f"method {run.method} builds no flat projection T, so there is no T or covariance"
    if run.setting("gm.enabled") is False:
        return "gm.enabled=false: no T or covariance is collected"
    return f"{run.checkpoint.name} holds no T yet (no stage had finished)"


def plot_spectra(runs: list[RunData], tables: list[list[dict[str, Any]]], path) -> None:
    """spectra.png: per run Ȳ's sorted singular values, T's, and Ȳ's max and mean per layer."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(runs) + 0.6, 10.0), layout="constrained")
    axes = fig.subplots(3, len(runs), squeeze=False)
    for k, (run, rows) in enumerate(zip(runs, tables, strict=True)):
        cov_ax, t_ax, bar_ax = (axes[i][k] for i in range(3))
        reason = no_spectra_reason(run) if not rows else None
        if not rows:
            for ax in (cov_ax, t_ax, bar_ax):
                ax.axis("off")
            cov_ax.text(0.5, 0.5, f"{run.label}\n\n{_wrap(reason)}", ha="center", va="center", fontsize=9)
            continue
        for row in rows:
            name = f"{row['modality']}.{row['layer']}"
            if "cov" in row:
                cov = row["cov"]
                values = cov["values"][: cov["rank"]]
                label = f"{name} (d={row['d']}, rank {cov['rank']})"
                cov_ax.plot(range(1, len(values) + 1), values, label=label, lw=1.2)
            if "T" in row:  # ascending: T's i-th value belongs to Ȳ's i-th largest direction
                t_ax.plot(range(1, row["d"] + 1), row["T"]["values"][::-1], label=name, lw=1.2)
        tau = run.setting("gm.tau")
        cov_ax.set(yscale="log", xscale="log", xlabel="index i", ylabel="singular value λᵢ of Ȳ")
        cov_ax.set_title(f"{run.label}\nΣ_t z̄z̄ᵀ per layer (Eq. 2–3)", fontsize=9)
        cov_ax.legend(fontsize=7)
        t_ax.set(
            xscale="log", xlabel="index i (same order as Ȳ: sharpest first)", ylabel="singular value of T"
        )
        if isinstance(tau, int | float):
            t_ax.axhline(2.718281828**-tau, color="grey", ls="--", lw=0.8)
            t_ax.set_title(f"T = V exp(−τ(Λ−λmin)/(λmax−λmin)) Vᵀ, τ={tau:g}; dashed e^−τ", fontsize=9)
        _bars(bar_ax, [r for r in rows if "cov" in r])
    drawn = [k for k, rows in enumerate(tables) if rows]
    for row_axes in axes:  # one y range per row over the runs drawn: they compare at a glance
        lows, highs = zip(*(row_axes[k].get_ylim() for k in drawn), strict=True) if drawn else ((), ())
        for k in drawn:
            row_axes[k].set_ylim(min(lows), max(highs))
    fig.savefig(path, dpi=110)


def _bars(ax, rows: list[dict[str, Any]]) -> None:
    """Figure 5a: max and mean singular value of Ȳ per layer (log scale)."""
    names = [f"{r['modality']}.{r['layer']}" for r in rows]
    x = list(range(len(rows)))
    ax.bar([i - 0.2 for i in x], [r["cov"]["max"] for r in rows], width=0.4, label="max", color="tab:red")
    ax.bar([i + 0.2 for i in x], [r["cov"]["mean"] for r in rows], width=0.4, label="mean", color="tab:blue")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set(yscale="log", ylabel="singular value of Ȳ")
    ax.set_title("max and mean singular value per layer (Figure 5a)", fontsize=9)
    ax.legend(fontsize=8)


def _wrap(text: str | None, width: int = 48) -> str:
    import textwrap

    return textwrap.fill(text or "", width)
