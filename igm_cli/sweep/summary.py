"""Sweep summaries: one row per setting, mean and sample std over seeds of every metric.

Statistics cover the seeds whose trial finished ok: mean, and the sample standard
deviation (ddof = 1), which is null with fewer than two seeds (one seed says nothing
about spread). Written as summary.json and summary.csv beside sweep.json.
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Any

from .files import write_json_atomic, write_text_atomic
from .grid import METRICS, format_value

SPLITS = ("val", "test")
STD_NOTE = "sample standard deviation (ddof=1) over the seeds that finished ok; null with fewer than 2"


def summarize(settings: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in the sweep's setting order, for every setting with at least one recorded trial."""
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_setting.setdefault(record.get("setting", ""), []).append(record)
    rows = []
    for setting in settings:
        trials = sorted(by_setting.get(setting["id"], []), key=lambda r: r["seed"])
        if not trials:
            continue
        ok = [r for r in trials if r["status"] == "ok"]
        rows.append(
            {
                "setting": setting["id"],
                "paired": None,
                "values": setting["values"],
                "labels": {k: format_value(v) for k, v in setting["values"].items()},
                "seeds_ok": [r["seed"] for r in ok],
                "seeds_failed": [r["seed"] for r in trials if r["status"] == "failed"],
                "metrics": {split: _split_stats(ok, split) for split in SPLITS},
            }
        )
    paired = paired_differences(settings, records)
    for row in rows:
        row["paired"] = paired.get(row["setting"])
    return rows


def paired_differences(
    settings: list[dict[str, Any]], records: list[dict[str, Any]], reference: str = "joint"
) -> dict[str, dict[str, Any]]:
    """Per method setting: metric(method) − metric(`reference`) on the same seed, mean ± std.

    Only when `method` is swept and a setting with `method=<reference>` exists; the other
    swept values must match. Paired over the seeds both finished ok: seed-to-seed noise that
    both share cancels, so the difference is what a reader of "IGM − joint" wants.
    """
    ok = {(r.get("setting"), r["seed"]): r for r in records if r["status"] == "ok"}
    out: dict[str, dict[str, Any]] = {}
    for setting in settings:
        values = setting["values"]
        if "method" not in values or values["method"] == reference:
            continue
        twin = {**values, "method": reference}
        base = next((s for s in settings if s["values"] == twin), None)
        if base is None:
            continue
        seeds = sorted(seed for sid, seed in ok if sid == setting["id"] and (base["id"], seed) in ok)
        diffs = [_difference(ok[(setting["id"], s)], ok[(base["id"], s)]) for s in seeds]
        out[setting["id"]] = {
            "reference": reference,
            "seeds": seeds,
            "metrics": {split: _split_stats(diffs, split) for split in SPLITS},
        }
    return out


def _difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The difference a − b of every split/branch/metric both have."""
    diff: dict[str, Any] = {}
    for split in SPLITS:
        diff[split] = {
            branch: {k: v - b[split][branch][k] for k, v in metrics.items() if k in b[split].get(branch, {})}
            for branch, metrics in a.get(split, {}).items()
            if branch in b.get(split, {})
        }
    return diff


def _split_stats(ok: list[dict[str, Any]], split: str) -> dict[str, dict[str, dict[str, Any]]]:
    branches = list(dict.fromkeys(b for r in ok for b in r.get(split, {}) if b != "fused"))
    if any("fused" in r.get(split, {}) for r in ok):
        branches.append("fused")
    return {
        branch: {
            metric: _stats([r[split][branch][metric] for r in ok if metric in r[split].get(branch, {})])
            for metric in METRICS
        }
        for branch in branches
    }


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.stdev(values) if len(values) >= 2 else None,
        "n": len(values),
    }


def metric_of(row: dict[str, Any], metric: tuple[str, str, str]) -> dict[str, Any] | None:
    """The {mean, std, n} of `split.branch.metric` in a row (None when absent)."""
    split, branch, name = metric
    return row["metrics"].get(split, {}).get(branch, {}).get(name)


def best_rows(rows: list[dict[str, Any]], metric: tuple[str, str, str]) -> list[dict[str, Any]]:
    """The rows with the best mean (highest; lowest for loss); more than one is a tie."""
    scored = [(m["mean"], r) for r in rows if (m := metric_of(r, metric)) and m["mean"] is not None]
    if not scored:
        return []
    sign = -1 if metric[2] == "loss" else 1
    top = max(sign * mean for mean, _ in scored)
    return [r for mean, r in scored if abs(sign * mean - top) <= 1e-12]


def best_row(rows: list[dict[str, Any]], metric: tuple[str, str, str]) -> dict[str, Any] | None:
    """The first of the best rows (in setting order), or None."""
    best = best_rows(rows, metric)
    return best[0] if best else None


def verdict(rows: list[dict[str, Any]], metric: tuple[str, str, str]) -> str:
    """The best setting (or the tie), and the spread between settings beside the seed noise."""
    best = best_rows(rows, metric)
    if not best:
        return "no finished trial has this metric"
    stats = [m for r in rows if (m := metric_of(r, metric)) and m["mean"] is not None]
    means = [m["mean"] for m in stats]
    stds = [m["std"] for m in stats if m["std"] is not None]
    names = [", ".join(f"{k}={v}" for k, v in r["labels"].items()) or "base preset" for r in best]
    score = metric_of(best[0], metric)["mean"]
    if len(best) > 1:
        text = f"tie: {len(best)} settings share the best {'.'.join(metric)} {score:.4f}: {'; '.join(names)}"
    else:
        text = f"best: {names[0]} → {score:.4f}"
    if len(means) > 1:
        text += f"; spread of means {max(means) - min(means):.4f}"
        text += f" vs seed std ≈ {statistics.fmean(stds):.4f}" if stds else ""
    return text


def metric_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """Every (split, branch, metric) present in any row, in a stable order."""
    columns: dict[tuple[str, str, str], None] = {}
    for split in SPLITS:
        for row in rows:
            for branch, metrics in row["metrics"][split].items():
                for name in metrics:
                    columns[(split, branch, name)] = None
    return list(columns)


def write_summary(out: Path, keys: list[str], rows: list[dict[str, Any]], metric: str) -> dict[str, str]:
    """summary.json and summary.csv; returns their paths."""
    json_path, csv_path = Path(out) / "summary.json", Path(out) / "summary.csv"
    write_json_atomic(json_path, {"keys": keys, "metric": metric, "std": STD_NOTE, "rows": rows})
    columns = metric_columns(rows)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(
        ["setting", *keys, "seeds_ok", "seeds_failed"]
        + [f"{'.'.join(c)}.{stat}" for c in columns for stat in ("mean", "std")]
    )
    for row in rows:
        cells = [row["setting"], *(row["labels"][k] for k in keys)]
        cells += [len(row["seeds_ok"]), len(row["seeds_failed"])]
        for split, branch, name in columns:
            stats = row["metrics"][split].get(branch, {}).get(name, {})
            cells += [_cell(stats.get("mean")), _cell(stats.get("std"))]
        writer.writerow(cells)
    write_text_atomic(csv_path, text.getvalue())
    return {"json": str(json_path), "csv": str(csv_path)}


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)
