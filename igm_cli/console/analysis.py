"""Rendering of `igm eval`'s imbalance measures and robustness summary (rich, stderr)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

import igm_cli.console as base

from . import info
from .training import eval_table

CONFUSION_MAX_CLASSES = 12  # more classes: per-class and confusion tables in --json and confusion.png only


def eval_report(result: dict[str, Any]) -> None:
    """Every checkpoint's tables, the robustness summary, and the files written."""
    docs = result.get("checkpoints", [result])
    for doc in docs:
        eval_table(doc)
        imbalance_table(doc, confusion=len(docs) == 1)
    if any("robustness" in d for d in docs):
        robustness_table(docs)
    for kind, path in result.get("files", {}).items():
        info(f"{kind}: {path}", markup=False)


def imbalance_table(doc: dict[str, Any], confusion: bool = True) -> None:
    """Shapley shares, the fused-vs-best gap, per-class accuracy and (small C) the confusion matrix."""
    imbalance = doc["imbalance"]
    shap = imbalance["shapley"]
    how = shap["method"] if shap["method"] == "exact" else f"sampled, {shap['permutations']} orders"
    table = Table(
        title=f"Shapley share of the fused accuracy ({how}; v(∅) = 1/C = {shap['empty_set_value']:.3f})"
    )
    table.add_column("modality")
    table.add_column("alone", justify="right")
    table.add_column("Shapley φ", justify="right")
    table.add_column("share of Σφ", justify="right")
    total = sum(shap["values"].values())
    for m, phi in shap["values"].items():
        alone = doc["metrics"].get(m, {}).get("accuracy")
        share = f"{phi / total:.1%}" if total else "—"
        table.add_row(m, "—" if alone is None else f"{alone:.4f}", f"{phi:+.4f}", share)
    base.console.print(table)
    gap = imbalance["fused_minus_best_branch"]
    info(
        f"fused − best branch ({imbalance['best_branch']}): {gap:+.4f} accuracy; "
        f"missing branches: {shap['missing_means']}",
        markup=False,
    )
    per_class = imbalance["per_class_accuracy"]
    if len(per_class) > CONFUSION_MAX_CLASSES:  # too wide for a row: the weakest classes, all in --json
        scored = sorted((v, c) for c, v in per_class.items() if v is not None)
        weakest = ", ".join(f"{c} {v:.2f}" for v, c in scored[:5])
        info(f"fused accuracy per class, the 5 lowest of {len(per_class)}: {weakest}", markup=False)
        return
    table = Table(title="fused accuracy per true class")
    for c in per_class:
        table.add_column(c, justify="right")
    table.add_row(*("—" if v is None else f"{v:.2f}" for v in per_class.values()))
    base.console.print(table)
    if confusion:
        confusion_table(imbalance["confusion_matrix"])


def confusion_table(cm: dict[str, Any]) -> None:
    """Counts, rows true class, columns predicted."""
    table = Table(title="confusion matrix (rows: true class, columns: predicted, fused)")
    table.add_column("true \\ pred")
    for c in cm["classes"]:
        table.add_column(c, justify="right")
    for c, row in zip(cm["classes"], cm["counts"], strict=True):
        table.add_row(c, *(str(n) for n in row))
    base.console.print(table)


def robustness_table(docs: list[dict[str, Any]]) -> None:
    """One line per checkpoint and modality: area and drop at 0.5 of both curves (fused accuracy)."""
    table = Table(title="robustness: fused accuracy, area over [0, 1] and drop from 0 to 0.5")
    for column in (
        "checkpoint",
        "modality",
        "missing area",
        "missing drop@0.5",
        "noisy area",
        "noisy drop@0.5",
    ):
        table.add_column(column, justify="left" if column in ("checkpoint", "modality") else "right")
    for doc in docs:
        for m, curves in doc.get("robustness", {}).get("modalities", {}).items():
            cells = [
                f"{curves[kind]['summary']['accuracy'][key]:{fmt}}"
                for kind in ("missing", "noise")
                for key, fmt in (("area", ".4f"), ("drop_at_0.5", "+.4f"))
            ]
            table.add_row(f"{doc['name']} ({doc['label']})", m, *cells)
    base.console.print(table)
