"""The terminal rendering of the imbalance measures: small C as tables, large C as one line."""

import io

from rich.console import Console

import igm_cli.console as console


def doc(classes: int) -> dict:
    per_class = {f"c{i}": (None if i == 3 else i / classes) for i in range(classes)}
    counts = [[int(i == j) for j in range(classes)] for i in range(classes)]
    return {
        "metrics": {"a": {"accuracy": 0.5}, "b": {"accuracy": 0.6}},
        "imbalance": {
            "shapley": {
                "method": "exact",
                "empty_set_value": 1 / classes,
                "values": {"a": 0.2, "b": 0.3},
                "missing_means": "left out of the late fusion",
            },  # fmt: skip
            "fused_minus_best_branch": 0.05,
            "best_branch": "b",
            "per_class_accuracy": per_class,
            "confusion_matrix": {"classes": list(per_class), "counts": counts},
        },
    }


def rendered(monkeypatch, document: dict, confusion: bool = True) -> str:
    out = Console(file=io.StringIO(), width=200)
    monkeypatch.setattr(console, "console", out)
    console.imbalance_table(document, confusion=confusion)
    return " ".join(out.file.getvalue().split())  # titles wrap to a narrow table's width


def test_small_class_counts_get_the_per_class_and_confusion_tables(monkeypatch):
    text = rendered(monkeypatch, doc(4))
    assert "+0.2000" in text and "40.0%" in text and "fused − best branch (b): +0.0500" in text
    assert "fused accuracy per true class" in text and "confusion matrix" in text
    assert "confusion matrix" not in rendered(monkeypatch, doc(4), confusion=False)


def test_many_classes_name_the_weakest_five_in_one_line(monkeypatch):
    text = rendered(monkeypatch, doc(20))
    assert "the 5 lowest of 20: c0 0.00, c1 0.05, c2 0.10, c4 0.20, c5 0.25" in text
    assert "confusion matrix" not in text and "per true class" not in text
