"""README's "What the default shows" table, regenerated: every row, 5 seeds, paired differences.

Each row is the `mfeat` preset with the overrides listed in ROWS, and every setting that
differs between rows is written out in every row (method, sam.rho, gm.enabled, the joint
loss, the unimodal branch): a later change of a default (for example baselines training
without SAM by default) cannot silently change what a row measures. Runs are in-process,
one thread, deterministic; the output is the markdown block README.md holds between
`<!-- default-table:begin -->` and `<!-- default-table:end -->` (tests/test_readme.py has a
slow test that runs this script and compares).

    python bench/default_table.py                 # ~10-20 min on a 2-core shared CPU box
    python bench/default_table.py --seeds 1,2 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Every row states every setting that varies between rows (DEFAULTS holds the shared ones).
DEFAULTS = ["sam.rho=0.05", "gm.enabled=true", "baseline.joint_loss=fused", "baseline.modality=null"]
ROWS: list[tuple[str, str, list[str]]] = [
    ("fou alone", "--method unimodal --set baseline.modality=fou --set sam.baseline_rho=0",
     ["method=unimodal", "baseline.modality=fou", "sam.baseline_rho=0", "gm.enabled=false"]),
    ("kar alone", "--method unimodal --set baseline.modality=kar --set sam.baseline_rho=0",
     ["method=unimodal", "baseline.modality=kar", "sam.baseline_rho=0", "gm.enabled=false"]),
    ("joint, CE of the fused prediction", "--method joint --set sam.baseline_rho=0",
     ["method=joint", "baseline.joint_loss=fused", "sam.baseline_rho=0", "gm.enabled=false"]),
    ("joint, sum of branch CEs", "--method joint --set baseline.joint_loss=sum --set sam.baseline_rho=0",
     ["method=joint", "baseline.joint_loss=sum", "sam.baseline_rho=0", "gm.enabled=false"]),
    ("IGM", "--set sam.rho=0.05",
     ["method=igm", "sam.rho=0.05", "gm.enabled=true"]),
    ("IGM without GM", "--set sam.rho=0.05 --set gm.enabled=false",
     ["method=igm", "sam.rho=0.05", "gm.enabled=false"]),
    ("IGM without SAM", "--set sam.rho=0",
     ["method=igm", "sam.rho=0", "gm.enabled=true"]),
]  # fmt: skip
REFERENCE = "IGM"
COMPARED = (
    "joint, CE of the fused prediction",
    "joint, sum of branch CEs",
    "IGM without GM",
    "IGM without SAM",
)


def run_row(sets: list[str], seed: int, runs_dir: Path) -> dict[str, float]:
    """Test accuracy per branch and fused of one run."""
    from igm_cli.pipeline import train
    from igm_cli.presets import resolve_preset

    preset = resolve_preset("mfeat", [*DEFAULTS, *sets, f"seed={seed}"])
    results = train(preset, runs_dir=runs_dir, threads=1)
    return {name: metrics["accuracy"] for name, metrics in results["test"].items()}


def measure(seeds: list[int]) -> dict[str, dict[int, dict[str, float]]]:
    """Row label → seed → {branch: test accuracy}."""
    import torch

    torch.set_num_threads(1)
    out: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, _, sets in ROWS:
            out[label] = {seed: run_row(sets, seed, Path(tmp)) for seed in seeds}
            print(f"  {label}: done", file=sys.stderr, flush=True)
    return out


def _cell(values: list[float]) -> str:
    if not values:
        return ""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {std:.3f}"


def render(results: dict[str, dict[int, dict[str, float]]], seeds: list[int]) -> str:
    """The markdown block: per-row mean ± std, then IGM − row fused, paired by seed."""
    lines = [
        f"Test accuracy, mean ± std over seeds {', '.join(map(str, seeds))} "
        "(`python bench/default_table.py`):",
        "",
        "| run | command | fou | kar | fused |",
        "|---|---|---|---|---|",
    ]
    for label, command, _ in ROWS:
        per_seed = results[label]
        cells = [_cell([per_seed[s][b] for s in seeds if b in per_seed[s]]) for b in ("fou", "kar")]
        fused = _cell([per_seed[s]["fused"] for s in seeds]) if "fused" in per_seed[seeds[0]] else ""
        if label.endswith("alone"):
            fused = ""  # one branch: the fused prediction is that branch
        lines.append(f"| {label} | `igm train {command}` | {cells[0]} | {cells[1]} | {fused} |")
    lines += [
        "",
        "Paired by seed: IGM's fused test accuracy minus the other run's (positive: IGM better).",
        "",
        "| IGM minus | mean | std | per seed | IGM better / tied / worse |",
        "|---|---|---|---|---|",
    ]
    ref = results[REFERENCE]
    for label in COMPARED:
        diffs = [ref[s]["fused"] - results[label][s]["fused"] for s in seeds]
        better = sum(d > 1e-9 for d in diffs)
        worse = sum(d < -1e-9 for d in diffs)
        per = " ".join(f"{d:+.3f}" for d in diffs)
        mean, std = statistics.fmean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        tied = len(diffs) - better - worse
        lines.append(f"| {label} | {mean:+.4f} | {std:.4f} | {per} | {better} / {tied} / {worse} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure and print the table (or the raw numbers with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = measure(seeds)
    if args.json:
        print(json.dumps({label: {str(s): v for s, v in r.items()} for label, r in results.items()}))
    else:
        sys.stdout.write(render(results, seeds))


if __name__ == "__main__":
    main()
