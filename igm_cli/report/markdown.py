"""report.md: the figures embedded with a one-paragraph caption each, and the tables behind them."""

from __future__ import annotations

from typing import Any

from .cosine import no_histogram_reason
from .source import RunData
from .spectra import no_spectra_reason


def table3_markdown(runs: list[RunData], tables: list[list[dict[str, Any]]]) -> str:
    """The paper's Table 3: a row per run, a column per finished stage (fused validation accuracy)."""
    width = max((len(t) for t in tables), default=0)
    if width == 0:
        return "_No stage has finished in any of these runs._\n"
    headers = []
    for i in range(width):
        labels = {t[i]["label"] for t in tables if len(t) > i}
        headers.append(labels.pop() if len(labels) == 1 else f"after stage {i}")
    lines = ["| run | " + " | ".join(headers) + " |", "|---|" + "---|" * width]
    for run, rows in zip(runs, tables, strict=True):
        cells = [_acc(r["fused"]) for r in rows] + [""] * (width - len(rows))
        lines.append(f"| {run.label} | " + " | ".join(cells) + " |")
    branch_lines = []
    for run, rows in zip(runs, tables, strict=True):
        for m in run.modalities:
            cells = [_acc(r["branches"].get(m)) for r in rows] + [""] * (width - len(rows))
            branch_lines.append(f"| {run.name} · {m} branch | " + " | ".join(cells) + " |")
    return "\n".join(lines + branch_lines) + "\n"


def spectra_markdown(run: RunData, rows: list[dict[str, Any]]) -> str:
    """Per layer: d, Ȳ's max and mean singular value, T's smallest and mean (trace(T)/d)."""
    if not rows:
        return f"_{run.label}: {no_spectra_reason(run)}._\n"
    lines = [
        f"{run.label}, from `{run.checkpoint.name if run.checkpoint else ''}`:\n",
        "| layer | d | Ȳ max σ | Ȳ mean σ | T min σ | T mean σ |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cov, T = r.get("cov", {}), r.get("T", {})
        lines.append(
            f"| {r['modality']}.{r['layer']} | {r['d']} | {_g(cov.get('max'))} | {_g(cov.get('mean'))} "
            f"| {_g(T.get('min'))} | {_g(T.get('mean'))} |"
        )
    return "\n".join(lines) + "\n"


def cosine_markdown(run: RunData, rows: list[dict[str, Any]]) -> str:
    """Per stage and layer: steps, share unchanged, share below 0.99, the median's bin."""
    if not rows:
        return f"_{run.label}: {no_histogram_reason(run)}._\n"
    lines = [
        f"{run.label}:\n",
        "| stage | layer | steps | unchanged (cos ≥ 1−10⁻⁶) | cos < 0.99 | median in |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        for layer, s in row["summary"].items():
            median = s["median_bin"]
            where = f"[{median[0]:.6g}, {median[1]:.6g}]" if median else "–"
            lines.append(
                f"| {row['label']} | {layer} | {s['steps']} | {_pct(s['unchanged'])} "
                f"| {_pct(s['below_0.99'])} | {where} |"
            )
    return "\n".join(lines) + "\n"


def report_markdown(runs: list[RunData], parts: dict[str, Any]) -> str:
    """The whole report.md; `parts` holds the figure file names and the per-run tables."""
    names = ", ".join(f"`{r.name}` ({' '.join([r.method, *r.variant()])})" for r in runs)
    out = [f"# igm report: {names}\n"]
    for run in runs:
        has_T = run.checkpoint is not None and any(k.startswith("gm.") for k in run.tensors)
        source = f"; T and Ȳ from `{run.checkpoint.name}`" if has_T else ""
        stages = f"{len(run.stages)} finished stage{'' if len(run.stages) == 1 else 's'}"
        out.append(f"- `{run.path}`: method {run.method}, {len(run.epochs)} epochs, {stages}{source}")
    side = " Runs are side by side, one column each." if len(runs) > 1 else ""
    out += [
        "\n## Training curves and Table 3\n",
        f"![training curves]({parts['files']['curves']})\n",
        "Train loss (top) of the branch or branches each stage trains and validation accuracy "
        "(bottom) of every branch and of the fused model (black) after every epoch, from "
        "metrics.jsonl. Bands mark the stages, coloured by the modality they train: in IGM's "
        "alternation a branch's curve moves only in its own bands, and the fused curve shows "
        f"what each stage added.{side} The table is the paper's Table 3: fused validation accuracy "
        'at the end of each stage (metrics.jsonl records validation only; the paper\'s "Initial" '
        "column, before any training, is not recorded).\n",
        parts["table3"],
        "\n## Spectra of Ȳ and T (Figure 5a)\n",
        f"![spectra]({parts['files']['spectra']})\n",
        "Sorted singular values of each layer's accumulated covariance Ȳ = Σ_t z̄_t z̄_tᵀ (top, "
        "Eq. 2–3: a large λᵢ marks a sharp direction of the modality that trained) and of the "
        "T built from it (middle, Eq. 4: from 1 in flat directions down to e^−τ in the sharpest), "
        "and the maximum and mean singular value of Ȳ per layer (bottom, the paper's Figure 5a, "
        "where smaller values mean a flatter loss along the projected directions).\n",
        *parts["spectra"],
        "\n## Gradient change cosine (Figure 1)\n",
        f"![gradient cosine]({parts['files']['grad_cosine']})\n",
        "For every step and every layer whose gradient the method modifies, cos(∇W, ∇W·T) for IGM "
        "(the T of the previous modality, Eq. 9) or cos(G, G·Pᵀ) for MLA's shared head, counted "
        "in fixed bins during training and drawn as the share of steps per bin, one line per stage "
        "(layers pooled). Values near 1 mean the modification kept the gradient's direction (good "
        "plasticity, the paper's argument for IGM); a stage before the source modality has a T, "
        "or a run with gm.enabled=false, sits entirely at 1.\n",
        *parts["cosine"],
    ]
    return "\n".join(out) + "\n"


def _acc(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _g(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"
