"""Costs of the analysis tools, measured in one run; prints ratios.

Gradient-change cosine histogram (engine/grad_cosine.py, paper Figure 1): an IGM step with
the histogram against the same step without it (the method observing no layer), on
(a) the paper-sized branch of bench/step_overhead.py: the crema-d audio branch, a
ResNet-18 from scratch on a 1×257×188 spectrogram at batch 12, whose three head Linears
get the video branch's T; (b) the embedded mfeat preset's MLP branch. Both variants run
the engine's own Trainer._step with SAM as the preset sets it; blocks alternate within
each round and a ratio is the median over rounds (step_overhead.py's method). Since one
step's noise is far larger than the histogram's cost, `observe` is also timed alone, per
call, on the gradients of a real step, and reported as a share of the median step.
Target (issue 13): ≤ 2 % of a step on the ResNet-18 branch.

    python bench/analysis.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_overhead import Bench, iqr, mfeat_bench, paper_bench, time_block, time_each  # noqa: E402

TARGET = 0.02  # the histogram's share of a ResNet-18 branch step


def with_and_without_histogram(bench: Bench) -> None:
    """Adds steps `hist_on` (IGM step as trained) and `hist_off` (the method observes no layer)."""
    method = bench.sam_trainer.method
    observed = method._observed
    assert len(observed) == 3, "the histogram must observe the three paired head Linears"

    def without(inputs, labels):
        method._observed = []
        try:
            return bench.steps["sam_on"](inputs, labels)
        finally:
            method._observed = observed

    bench.steps["hist_on"] = bench.steps["sam_on"]
    bench.steps["hist_off"] = without


def measure(bench: Bench, rounds: int, block_seconds: float, budget_seconds: float) -> dict:
    """Interleaved blocks of both variants, then `observe` alone on one real step's gradients."""
    import time

    with_and_without_histogram(bench)
    variants = ("hist_on", "hist_off")
    sizes = {}
    for v in variants:
        time_block(bench, v, 3, block_seconds)  # warm-up
        sizes[v] = max(3, round(block_seconds / time_block(bench, v, 5, block_seconds)))
    times: dict[str, list[float]] = {v: [] for v in variants}
    deadline = time.perf_counter() + budget_seconds
    for r in range(rounds):
        if r >= 3 and time.perf_counter() > deadline:
            break
        for v in variants[r % 2 :] + variants[: r % 2]:
            times[v].append(time_block(bench, v, sizes[v], 4 * block_seconds))
    ratios = [a / b for a, b in zip(times["hist_on"], times["hist_off"], strict=True)]

    method = bench.sam_trainer.method
    bench.reset()
    bench.steps["hist_off"](*bench.batches[0])  # leaves one step's (projected) gradients
    keys = [k for k, _ in method._observed]
    after = [w.grad.clone() for _, w in method._observed]
    before = [g * 1.01 for g in after]  # any two gradients of the right shapes: the cost is shape-bound
    observe_us = time_each(lambda: method.cosine.observe(keys, before, after), 200, 5.0)
    step_ms = 1e3 * statistics.median(times["hist_off"])
    return {
        "name": bench.name,
        "description": bench.description,
        "step_ms": {v: 1e3 * statistics.median(t) for v, t in times.items()},
        "step_iqr_ms": {v: 1e3 * iqr(t) if len(t) > 1 else 0.0 for v, t in times.items()},
        "ratio_with_histogram": statistics.median(ratios),
        "ratio_iqr": iqr(ratios) if len(ratios) > 1 else 0.0,
        "observe_us": observe_us,
        "observe_share_of_step": observe_us / (1e3 * step_ms),
        "rounds_done": len(ratios),
        "steps_per_block": sizes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer rounds (a smoke run).")
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    rounds, block, budget = (3, 2.0, 60.0) if args.quick else (9, 6.0, 420.0)
    rows = [measure(paper_bench(), rounds, block, budget), measure(mfeat_bench(), rounds, 1.0, 60.0)]
    if args.json:
        print(json.dumps({"grad_cosine": rows, "threads": torch.get_num_threads()}, indent=2))
        return
    print(f"gradient-cosine histogram per IGM step (torch threads {torch.get_num_threads()})")
    for r in rows:
        print(f"  {r['name']}: {r['description']}")
        print(
            f"    step with / without histogram: {r['step_ms']['hist_on']:.1f} / "
            f"{r['step_ms']['hist_off']:.1f} ms"
            f"  ratio ×{r['ratio_with_histogram']:.4f} (IQR {r['ratio_iqr']:.4f}, {r['rounds_done']} rounds)"
        )
        print(f"    observe() alone: {r['observe_us']:.0f} µs = {r['observe_share_of_step']:.3%} of a step")
    share = rows[0]["observe_share_of_step"]
    verdict = "met" if share <= TARGET else "MISSED"
    print(f"target ≤ {TARGET:.0%} of a step on the ResNet-18 branch: {verdict} ({share:.3%})")


if __name__ == "__main__":
    main()
