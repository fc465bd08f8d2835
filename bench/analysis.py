"""Costs of the analysis tools, measured in one run; prints ratios.

1. Robustness sweep (`igm eval --robustness`) against the `igm eval` passes it needs.

The sweep is what `igm eval --robustness` adds per checkpoint: 11 missing rates and 11
noise levels for each of the m modalities (the training-set std of each modality's input
included). It needs the clean pass (every branch once) and, per modality and σ > 0, one
pass of that branch, i.e. 1 + 10·(Σ_m branch_m)/(Σ_m branch_m) = 11 evaluation passes;
the missing curves must come for free (re-fused stored logits). One evaluation pass is
what `igm eval` computes before its scikit-learn metrics: `engine.evaluate.predict` over
the split (every branch, eval mode, evaluation pipeline) and the fused probabilities
(leaving out the metrics, which would flatter the ratio). Blocks of each alternate within
a round (the order rotates); the ratio is the median over rounds of
sweep / (11 × eval pass). Target: ≤ 1.2×.

Models (untrained weights: the cost does not depend on them), on the embedded train
split (1,200 samples): (a) the `mfeat` preset's IGM model; (b) wide branches (MLP hidden
[512, 512], d = 512), where the forward pass dominates; (c) DGL on the wide branches (the
zeroed-feature path).

2. Gradient-change cosine histogram (engine/grad_cosine.py, paper Figure 1): an IGM step with
the histogram against the same step without it (the method observing no layer), on
(a) the paper-sized branch of bench/step_overhead.py: the crema-d audio branch, a
ResNet-18 from scratch on a 1×257×188 spectrogram at batch 12, whose three head Linears
get the video branch's T; (b) the embedded mfeat preset's MLP branch. Both variants run
the engine's own Trainer._step with SAM as the preset sets it; blocks alternate within
each round and a ratio is the median over rounds (step_overhead.py's method). Since one
step's noise is far larger than the histogram's cost, `observe` is also timed alone, per
call, on the gradients of a real step, and reported as a share of the median step.
Target (issue 13): ≤ 2 % of a step on the ResNet-18 branch.

    python bench/analysis.py [--only robustness|histogram] [--quick] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from igm_cli.analysis.corruption import build_corruption
from igm_cli.analysis.outputs import Fuser, collect
from igm_cli.analysis.robustness import LEVELS, robustness
from igm_cli.engine.batches import SplitBatches
from igm_cli.engine.evaluate import predict
from igm_cli.engine.fusion import fuse
from igm_cli.methods import get_method
from igm_cli.pipeline import build_for, model_info, open_data
from igm_cli.presets import resolve_preset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_overhead import Bench, iqr, mfeat_bench, paper_bench, time_block, time_each  # noqa: E402

# ---------------------------------------------------------------- 1. robustness sweep

WIDE = [f"modalities.{m}.encoder.{k}" for m in ("fou", "kar") for k in ("hidden=[512,512]", "dim=512")]
PASSES = 1 + (len(LEVELS) - 1)  # clean pass + one pass of every branch per σ > 0


def setup(sets: list[str]):
    """Model, the train split's batches, the prepared data, the preset and its fusion."""
    preset = resolve_preset("mfeat", sets)
    data = open_data(preset, None)
    model = build_for(preset, model_info(preset, data, None), torch.device("cpu")).eval()
    batches = SplitBatches(data.split("train"), model.modalities, torch.device("cpu"))
    return model, batches, data, preset, get_method(preset).fusion


def sweep_bench(name: str, sets: list[str], rounds: int) -> dict:
    model, batches, data, preset, fusion = setup(sets)
    size = get_method(preset).eval_batch_size

    def eval_pass() -> float:
        t = time.perf_counter()
        logits, _ = predict(model, batches, size)
        fuse(logits, fusion, size)
        return time.perf_counter() - t

    def sweep() -> float:
        t = time.perf_counter()
        outputs = collect(model, batches, size)
        fuser = Fuser(model, outputs, fusion, size)
        corruptions = {m: build_corruption(model, preset, data, m, size, 0) for m in fuser.modalities}
        robustness(model, fuser, batches, corruptions, size, 0)
        return time.perf_counter() - t

    def eval_block() -> float:
        return sum(eval_pass() for _ in range(PASSES)) / PASSES

    eval_block(), sweep()  # warm-up
    ratios, sweeps, passes = [], [], []
    for r in range(rounds):
        order = (sweep, eval_block) if r % 2 == 0 else (eval_block, sweep)
        times = {f.__name__: f() for f in order}
        sweeps.append(times["sweep"])
        passes.append(times["eval_block"])
        ratios.append(times["sweep"] / (PASSES * times["eval_block"]))
    return {
        "model": name,
        "method": preset.method,
        "samples": len(batches),
        "modalities": len(model.modalities),
        "curve_points": 2 * len(LEVELS) * len(model.modalities),
        "passes_needed": PASSES,
        "seconds_per_sweep": statistics.median(sweeps),
        "seconds_per_eval_pass": statistics.median(passes),
        "ratio": statistics.median(ratios),
        "target": 1.2,
    }


# ---------------------------------------------------------------- 2. gradient-cosine histogram

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


def robustness_part(quick: bool) -> list[dict]:
    """The sweep against 11 evaluation passes on three models."""
    rounds = 3 if quick else 7
    return [
        sweep_bench("mfeat preset", [], rounds),
        sweep_bench("wide branches (512)", WIDE, rounds),
        sweep_bench("dgl, wide branches", [*WIDE, "method=dgl"], rounds),
    ]


def print_robustness(results: list[dict]) -> None:
    print("robustness sweep vs the evaluation passes it needs")
    for r in results:
        verdict = "ok" if r["ratio"] <= r["target"] else "ABOVE TARGET"
        print(
            f"  {r['model']:<20} {r['samples']} samples, {r['curve_points']} curve points: sweep "
            f"{r['seconds_per_sweep'] * 1e3:7.1f} ms, eval pass {r['seconds_per_eval_pass'] * 1e3:6.1f} ms, "
            f"ratio to {r['passes_needed']} passes {r['ratio']:.3f}× (target ≤ 1.2×: {verdict})"
        )


def histogram_part(quick: bool) -> list[dict]:
    """The histogram's cost per IGM step on the ResNet-18 branch and on mfeat."""
    rounds, block, budget = (3, 2.0, 60.0) if quick else (9, 6.0, 420.0)
    return [measure(paper_bench(), rounds, block, budget), measure(mfeat_bench(), rounds, 1.0, 60.0)]


def print_histogram(rows: list[dict]) -> None:
    print("gradient-cosine histogram per IGM step")
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
    print(f"  target ≤ {TARGET:.0%} of a step on the ResNet-18 branch: {verdict} ({share:.3%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("robustness", "histogram"), help="One part (default: both).")
    parser.add_argument("--quick", action="store_true", help="Fewer rounds (a smoke run).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS).")
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = parser.parse_args()
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads()
    torch.set_num_threads(threads)
    document: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    if args.only in (None, "robustness"):
        document["robustness"] = robustness_part(args.quick)
        if not args.json:
            print_robustness(document["robustness"])
    if args.only in (None, "histogram"):
        document["grad_cosine"] = histogram_part(args.quick)
        if not args.json:
            print_histogram(document["grad_cosine"])
    if args.json:
        print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
