"""Imbalance measures of one evaluation: Shapley shares, fused-vs-best-branch gap, per-class view.

v(S) is the fused accuracy of the branches in S alone (outputs.Fuser: the others left out
of the late fusion, or zeroed in a fusion module); v(∅) = 1/C, the expected accuracy of a
uniform guess, so each φ_m is the accuracy modality m adds over chance and Σφ = acc − 1/C.
"""

from __future__ import annotations

from typing import Any

from .classwise import accuracy_and_macro_f1, confusion_matrix, per_class_accuracy
from .outputs import Fuser
from .shapley import EXACT_UP_TO, PERMUTATIONS, shapley


def imbalance_measures(
    fuser: Fuser, metrics: dict[str, dict[str, float]], classes: list[str], seed: int = 0
) -> dict[str, Any]:
    """What `igm eval` adds beside the per-branch metrics."""
    labels = fuser.outputs.labels
    players = fuser.modalities
    empty = 1 / fuser.num_classes

    def value(subset: frozenset[str]) -> float:
        if not subset:
            return empty
        return accuracy_and_macro_f1(fuser.subset(subset), labels, fuser.num_classes)["accuracy"]

    phi, how = shapley(players, value, seed)
    branches = {m: metrics[m]["accuracy"] for m in players if m in metrics}
    best = max(branches, key=branches.get)
    cm = confusion_matrix(fuser.predictions(fuser.full), labels, fuser.num_classes)
    shap: dict[str, Any] = {
        "values": phi,
        "method": how,
        "empty_set_value": empty,
        "empty_set": "1/C: the expected accuracy of a uniform random guess (no modality)",
        "missing_means": fuser.rule,
    }
    if how == "exact":
        shap["subset_accuracy"] = {"+".join(s) or "none": value(frozenset(s)) for s in _subsets(players)}
    else:
        shap["permutations"] = PERMUTATIONS
        shap["exact_up_to"] = EXACT_UP_TO
    return {
        "shapley": shap,
        "best_branch": best,
        "fused_minus_best_branch": metrics["fused"]["accuracy"] - branches[best],
        "per_class_accuracy": dict(zip(classes, per_class_accuracy(cm), strict=True)),
        "confusion_matrix": {
            "rows": "true class",
            "columns": "predicted class (fused)",
            "classes": classes,
            "counts": cm.tolist(),
        },
    }


def _subsets(players: list[str]) -> list[tuple[str, ...]]:
    """Every subset of the players, smallest first, each in the players' order."""
    subsets = [tuple(p for k, p in enumerate(players) if mask >> k & 1) for mask in range(1 << len(players))]
    return sorted(subsets, key=len)
