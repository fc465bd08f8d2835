"""Seconds per loss-landscape grid point vs one evaluation pass of the same batches, in one run.

A grid point is what `igm landscape` does per point: `evaluate_grid` moving every weight
of dimension ≥ 2 to θ + αδ + βη (filter-normalised directions) and evaluating the fused
NLL and accuracy on the fixed subset. The evaluation pass is what `igm eval` does on the
same batches: `engine.evaluate.predict` (every branch, eval mode, evaluation pipeline)
plus the fused NLL of `score` (without its scikit-learn metrics, which would flatter the
ratio). Both run on one model and one subset of the embedded train split; blocks of each
alternate within a round (the order rotates), and the ratio is the median over rounds of
(grid block / points) / (eval block / passes). Target: ≤ 1.2×.

Models: (a) the `mfeat` preset's model; (b) the same data through wide branches (MLP
hidden [512, 512], d = 512), where the forward pass, not the bookkeeping, dominates.

    python bench/landscape.py [--quick] [--batches 4] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from igm_cli.data.prepared import SplitArrays
from igm_cli.engine.batches import SplitBatches
from igm_cli.engine.evaluate import predict
from igm_cli.engine.fusion import fuse
from igm_cli.landscape.directions import make_directions
from igm_cli.landscape.objective import SubsetObjective, fixed_batches, scope_parameters, subset_indices
from igm_cli.landscape.surface import Perturbation, evaluate_grid, grid_axes
from igm_cli.pipeline import build_for, model_info, open_data
from igm_cli.presets import resolve_preset

WIDE = [f"modalities.{m}.encoder.{k}" for m in ("fou", "kar") for k in ("hidden=[512,512]", "dim=512")]


def setup(sets: list[str], batches: int):
    """Model, the fixed subset as landscape batches and as a SplitBatches for predict()."""
    preset = resolve_preset("mfeat", sets)
    data = open_data(preset, None)
    model = build_for(preset, model_info(preset, data, None), torch.device("cpu"))
    split = data.split("train")
    size = preset.data.eval_batch_size
    index = subset_indices(len(split), batches, size, seed=0)
    rows = index.numpy()
    subset = SplitArrays({m: np.asarray(x)[rows] for m, x in split.inputs.items()}, split.labels[rows])
    same = SplitBatches(subset, model.modalities, torch.device("cpu"))
    grid_batches = fixed_batches(SplitBatches(split, model.modalities, torch.device("cpu")), index, size)
    return model, grid_batches, same, size, preset.fusion


def eval_pass(model, batches: SplitBatches, size: int, fusion: str) -> float:
    """What `igm eval` computes on these batches, up to the loss."""
    logits, labels = predict(model, batches, size)
    return float(torch.nn.functional.nll_loss(fuse(logits, fusion).clamp_min(1e-12).log(), labels))


def bench(name: str, sets: list[str], batches: int, rounds: int, block: int) -> dict:
    model, grid_batches, same, size, fusion = setup(sets, batches)
    objective = SubsetObjective(model, grid_batches, "fused", fusion)
    named = scope_parameters(model, "fused")
    perturbation = Perturbation([p for _, p in named], make_directions(named, seed=0, dims=2))
    axes = [grid_axes(25, 1.0)] * 2
    assert abs(objective.evaluate()[0] - eval_pass(model, same, size, fusion)) < 1e-5  # same loss, same data
    cursor = {"next": 0}

    def grid_block() -> float:
        done = np.ones((25, 25), np.uint8)
        flat = done.reshape(-1)
        start = cursor["next"] % (625 - block)
        flat[start : start + block] = 0
        cursor["next"] += block
        surface = {"loss": np.zeros((25, 25)), "accuracy": np.zeros((25, 25)), "done": done}
        t = time.perf_counter()
        evaluate_grid(objective, perturbation, axes, surface)
        return (time.perf_counter() - t) / block

    def eval_block() -> float:
        t = time.perf_counter()
        for _ in range(block):
            eval_pass(model, same, size, fusion)
        return (time.perf_counter() - t) / block

    grid_block(), eval_block()  # warm-up
    ratios, per_point, per_pass = [], [], []
    for r in range(rounds):
        order = (grid_block, eval_block) if r % 2 == 0 else (eval_block, grid_block)
        times = {f.__name__: f() for f in order}
        per_point.append(times["grid_block"])
        per_pass.append(times["eval_block"])
        ratios.append(times["grid_block"] / times["eval_block"])
    return {
        "model": name,
        "samples": len(same),
        "parameters_moved": sum(p.numel() for _, p in named),
        "seconds_per_grid_point": statistics.median(per_point),
        "seconds_per_eval_pass": statistics.median(per_pass),
        "ratio": statistics.median(ratios),
        "target": 1.2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--batches", type=int, default=4, help="evaluation batches of 256 in the subset")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds, block = (3, 5) if args.quick else (9, 10)
    results = [
        bench("mfeat preset", [], args.batches, rounds, block),
        bench("wide branches (512)", WIDE, args.batches, rounds, block),
    ]
    if args.json:
        print(json.dumps({"torch_threads": torch.get_num_threads(), "results": results}, indent=2))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median over {rounds} rounds")
    for r in results:
        verdict = "ok" if r["ratio"] <= r["target"] else "ABOVE TARGET"
        print(
            f"{r['model']:<22} {r['samples']} samples, {r['parameters_moved']:>9,} weights moved: "
            f"grid point {r['seconds_per_grid_point'] * 1e3:7.2f} ms, eval pass "
            f"{r['seconds_per_eval_pass'] * 1e3:7.2f} ms, ratio {r['ratio']:.3f}× (target ≤ 1.2×: {verdict})"
        )


if __name__ == "__main__":
    main()
