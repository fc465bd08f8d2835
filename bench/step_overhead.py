"""IGM step vs plain SGD step, timed in one run; prints the ratios IGM/plain.

Two models: (a) the embedded `mfeat` preset's model on 12 real rows of its train split;
(b) a branch of the paper's size: the crema-d preset's audio branch, a ResNet-18 from scratch
on a 1×257×188 spectrogram at batch 12, head [256, 64], 6 classes.

The IGM step is the engine's own `Trainer._step` on a stage whose T is really applied
(FlatProjector.collect on the other modality, then begin_stage); the plain step is a
torch loop on the same branch, batch and optimizer settings (zero_grad, CE, backward,
step). Variants are timed in blocks that alternate within each round (the order rotates
between rounds); a ratio is the median over rounds of IGM block / plain block of that
round, so slow drifts of a noisy machine cancel.

Every block starts from the same weights and empty momentum and walks through the split's
batches: training many steps on one batch drives the gradients into denormal floats, which
slows a CPU step ~100× and measures nothing useful.

    python bench/step_overhead.py [--quick] [--json] [--threads N] [--scope | --scope-only]

`--scope` adds gm.scope=fraction 0.3 vs head on the crema-d audio branch (scope_overhead.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from igm_cli.data.prepared import SplitArrays
from igm_cli.engine.batches import SplitBatches, epoch_order
from igm_cli.engine.flat_projector import FlatProjector
from igm_cli.engine.optim import build_optimizer
from igm_cli.engine.sam import SamStep, frozen_bn_stats
from igm_cli.engine.stages import Stage
from igm_cli.engine.trainer import Trainer, TrainerConfig
from igm_cli.methods import get_method
from igm_cli.methods.igm import Igm
from igm_cli.pipeline import build_for, model_info, open_data
from igm_cli.presets import Preset, resolve_preset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a script from the repo root
import scope_overhead  # noqa: E402

BATCH = 12
RHO = 0.05
TARGETS = {"sam_on": 2.1, "sam_off": 1.05}  # for the paper-sized branch only
VARIANTS = ("plain", "sam_on", "sam_off")
DEVICE = torch.device("cpu")


class NullSink:
    """CheckpointSink that keeps nothing."""

    def save(self, kind, state, optimizer, extra=None) -> None:
        pass

    def log(self, record) -> None:
        pass


@dataclass
class Bench:
    """One model with everything its three step variants need."""

    name: str
    description: str
    model: torch.nn.Module
    stage: Stage
    projector: FlatProjector
    steps: dict[str, Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]]
    sam_trainer: Trainer
    params: list[torch.nn.Parameter]
    batches: list[tuple[dict[str, torch.Tensor], torch.Tensor]]  # prepared inputs, labels
    reset: Callable[[], None]  # back to the starting weights, momentum and SAM state


# ---------------------------------------------------------------- setup


def make_bench(name: str, description: str, preset: Preset, model, train: SplitBatches) -> Bench:
    """Stage 2 of the IGM schedule trains modality 0 under modality 1's T (the real path)."""
    method = Igm(preset)
    stage = method.schedule()[2]
    active, source = stage.active[0], stage.source
    projector = method.projector
    order = epoch_order(len(train), preset.seed, 1, 0)
    source_branch = model.branch(source)
    batches = (source_branch.prepare(x[source], train=False) for x, _ in train.iterate(BATCH, order))
    projector.collect(model, source, batches)
    paired = method.begin_stage(model, stage, None)
    assert len(paired) == 3, f"T must act on all three head Linears (paired {paired})"

    config = TrainerConfig(BATCH, 256, preset.fusion, preset.selection, preset.seed)

    def trainer(rho: float) -> Trainer:
        return Trainer(
            model,
            method,
            make_optimizer=lambda params: build_optimizer(preset.optimizer, params),
            lr_at=lambda epoch, epochs: preset.optimizer.lr,
            train=train,
            val=train,
            sam=SamStep(rho),
            config=config,
            sink=NullSink(),
        )

    sam_on, sam_off = trainer(RHO), trainer(0.0)
    params = sam_on._activate(stage)  # train mode for the active branch, eval for the rest
    order = epoch_order(len(train), preset.seed, stage.index, 0)
    batches = [(model.prepare(stored, train=True), y) for stored, y in train.iterate(BATCH, order)]
    batches = [b for b in batches if len(b[1]) == BATCH]
    branch = model.branch(active)
    (substep,) = method.substeps(model, stage, params)
    optimizers = {v: build_optimizer(preset.optimizer, params) for v in VARIANTS}
    start_weights = {k: v.clone() for k, v in model.state_dict().items()}

    def reset() -> None:
        model.load_state_dict(start_weights)
        for optimizer in optimizers.values():
            optimizer.state.clear()

    def plain(inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        optimizer = optimizers["plain"]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(branch(inputs[active]), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    steps = {
        "plain": plain,
        "sam_on": lambda inputs, y: sam_on._step(substep, optimizers["sam_on"], inputs, y),
        "sam_off": lambda inputs, y: sam_off._step(substep, optimizers["sam_off"], inputs, y),
    }
    return Bench(name, description, model, stage, projector, steps, sam_on, params, batches, reset)


def mfeat_bench() -> Bench:
    preset = resolve_preset("mfeat")
    data = open_data(preset, None)
    model = build_for(preset, model_info(preset, data, None), DEVICE)
    train = SplitBatches(data.split("train"), preset.modality_names, DEVICE)
    description = "embedded preset mfeat (MLP [128] → 64, head [256, 64], 10 classes)"
    return make_bench("mfeat", description, preset, model, train)


def paper_bench() -> Bench:
    """The paper's audio branch: ResNet-18 from scratch on a 257×188 spectrogram, batch 12.

    The crema-d preset as shipped; the video branch only provides the T that acts on the
    audio head (it sees small random frames: its size does not enter the audio step).
    """
    preset = resolve_preset("crema-d", ["modalities.video.input.size=64"])
    shapes = {"audio": [257, 188], "video": [1, 3, 64, 64]}
    info = {"input_shapes": shapes, "classes": [str(c) for c in range(6)]}
    model = build_for(preset, info, DEVICE)
    rng = np.random.default_rng(0)
    n = 8 * BATCH
    split = SplitArrays(
        {
            "audio": rng.standard_normal((n, 257, 188), dtype=np.float32),
            "video": rng.integers(0, 256, (n, 1, 3, 64, 64), dtype=np.uint8),
        },
        rng.integers(0, 6, n),
    )
    train = SplitBatches(split, ["audio", "video"], DEVICE)
    description = "paper-sized: crema-d audio branch, ResNet-18 on 1×257×188, head [256, 64], 6 classes"
    return make_bench("resnet18", description, preset, model, train)


# ---------------------------------------------------------------- timing


def time_block(bench: Bench, variant: str, n: int, max_seconds: float = float("inf")) -> float:
    """Seconds per step over `n` back-to-back steps from the starting weights.

    Stops early after `max_seconds` (a stall on a busy machine must not eat the budget).
    """
    step, batches = bench.steps[variant], bench.batches
    bench.reset()
    gc.collect()
    start = time.perf_counter()
    for i in range(n):
        step(*batches[i % len(batches)])
        if time.perf_counter() - start > max_seconds:
            return (time.perf_counter() - start) / (i + 1)
    return (time.perf_counter() - start) / n


def measure_steps(bench: Bench, rounds: int, block_seconds: float, budget_seconds: float) -> dict:
    """Warm up, size the blocks, then interleave the variants (at most `rounds`, at least 3).

    The budget caps the wall time on a machine loaded from elsewhere: rounds stop early
    and `rounds_done` says how many there were.
    """
    sizes = {}
    for v in VARIANTS:
        time_block(bench, v, 10, block_seconds)  # warm-up (also SAM's once-per-epoch `realized`)
        sizes[v] = max(3, round(block_seconds / time_block(bench, v, 10, block_seconds)))
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    deadline = time.perf_counter() + budget_seconds
    for r in range(rounds):
        if r >= 3 and time.perf_counter() > deadline:
            break
        for v in VARIANTS[r % 3 :] + VARIANTS[: r % 3]:
            times[v].append(time_block(bench, v, sizes[v], 4 * block_seconds))
    ratios = {v: [a / p for a, p in zip(times[v], times["plain"], strict=True)] for v in VARIANTS[1:]}
    return {
        "step_ms": {v: 1e3 * statistics.median(t) for v, t in times.items()},
        "iqr_ms": {v: 1e3 * iqr(t) for v, t in times.items()},
        "ratio": {v: statistics.median(r) for v, r in ratios.items()},
        "ratio_iqr": {v: iqr(r) for v, r in ratios.items()},
        "steps_per_block": sizes,
        "rounds_done": len(times["plain"]),
    }


def iqr(values: list[float]) -> float:
    """Interquartile range: how noisy the blocks were."""
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q3 - q1


def time_each(
    call: Callable[[], None], n: int, budget_seconds: float, before: Callable[[], None] | None = None
) -> float:
    """Median microseconds of `call`, timed one call at a time (`before` runs untimed)."""
    samples = []
    deadline = time.perf_counter() + budget_seconds
    for _ in range(n):
        if len(samples) >= 5 and time.perf_counter() > deadline:
            break
        if before is not None:
            before()
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return 1e6 * statistics.median(samples)


def measure_fixed(bench: Bench, n: int, budget_seconds: float) -> dict:
    """Per-step costs that do not scale with the batch: T·∇W, SAM's save/move/restore, BN flag flip."""
    bench.reset()
    bench.steps["sam_off"](*bench.batches[0])  # leaves the (projected) gradients of one step in .grad
    saved = [p.grad.clone() for p in bench.params]

    def reset_grads() -> None:  # apply() is in place: without this ∇W T^k decays to denormals
        for p, g in zip(bench.params, saved, strict=True):
            p.grad.copy_(g)

    sam = bench.sam_trainer.sam

    def perturb_restore() -> None:
        sam.perturb(bench.params)
        sam.restore()

    def bn_flip() -> None:
        with frozen_bn_stats(bench.model):
            pass

    def realized() -> None:
        sam.perturb(bench.params)
        sam.realized()
        sam.restore()

    each = budget_seconds / 4
    out = {
        "projector.apply": time_each(bench.projector.apply, n, each, reset_grads),
        "sam.perturb+restore": time_each(perturb_restore, n, each),
        "frozen_bn_stats enter/exit": time_each(bn_flip, n, each),
    }
    # once per epoch, not per step: shown so it is not mistaken for a per-step cost
    out["sam.realized (once per epoch, incl. perturb+restore)"] = time_each(realized, n // 10, each)
    return out


# ---------------------------------------------------------------- per method

METHOD_ORDER = ("joint", "igm", "mie", "mla", "dgl")


def method_step(preset: Preset, info: dict, train: SplitBatches) -> tuple[Callable, Callable]:
    """One batch of the preset's method through the engine's own Trainer._step (and a reset).

    igm/mie train their third stage (modality 0: mfeat's fou, crema-d's audio ResNet-18) under
    the T of modality 1;
    SAM runs with the method's own ρ (the preset's sam.rho for igm/mie, sam.baseline_rho = 0
    for the others).
    """
    method = get_method(preset)
    torch.manual_seed(0)
    model = method.build_model(info["input_shapes"], len(info["classes"])).to(DEVICE)
    clip = preset.optimizer.clip_norm
    config = TrainerConfig(BATCH, 256, method.fusion, preset.selection, preset.seed, clip)
    trainer = Trainer(
        model, method, make_optimizer=None, lr_at=None, train=train, val=train,
        sam=SamStep(method.sam_rho), config=config, sink=NullSink(),
    )  # fmt: skip
    schedule = method.schedule()
    stage = schedule[2] if len(schedule) > 2 else schedule[0]  # igm/mie: modality 0 under T of modality 1
    if stage.index == 2:
        order = epoch_order(len(train), preset.seed, 0, 0)

        def batches_for(m: str):
            return (model.branch(m).prepare(x[m], train=False) for x, _ in train.iterate(BATCH, order))

        method.end_stage(model, schedule[1], batches_for)  # T of the stage's source
    params = trainer._activate(stage)
    method.begin_stage(model, stage, None)
    substeps = method.substeps(model, stage, params)
    optimizer = build_optimizer(preset.optimizer, params)
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def step(inputs, labels):
        for substep in substeps:
            trainer._step(substep, optimizer, inputs, labels)

    def reset():
        model.load_state_dict(start)
        optimizer.state.clear()

    return step, reset


def measure_methods(name: str, preset_name: str, sets: list[str], info: dict, train, rounds, block_seconds):
    """Seconds per batch of every method on the same batches; ratios to the plain joint step."""
    variants = {}
    for m in METHOD_ORDER:
        preset = resolve_preset(preset_name, [*sets, f"method={m}", f"data.batch_size={BATCH}"])
        variants[m] = method_step(preset, info, train)
    order = epoch_order(len(train), 0, 0, 0)
    model_inputs = get_method(resolve_preset(preset_name, sets)).build_model(
        info["input_shapes"], len(info["classes"])
    )  # only its input pipelines are used, to prepare the shared batches once
    batches = [(model_inputs.prepare(x, train=True), y) for x, y in train.iterate(BATCH, order)]
    batches = [b for b in batches if len(b[1]) == BATCH]

    def block(m: str, n: int) -> float:
        step, reset = variants[m]
        reset()
        gc.collect()
        start = time.perf_counter()
        for i in range(n):
            step(*batches[i % len(batches)])
        return (time.perf_counter() - start) / n

    sizes = {}
    for m in METHOD_ORDER:
        block(m, 3)  # warm-up
        sizes[m] = max(3, round(block_seconds / block(m, 5)))
    times: dict[str, list[float]] = {m: [] for m in METHOD_ORDER}
    for r in range(rounds):
        for m in METHOD_ORDER[r % 5 :] + METHOD_ORDER[: r % 5]:
            times[m].append(block(m, sizes[m]))
    return {
        "name": name,
        "step_ms": {m: 1e3 * statistics.median(t) for m, t in times.items()},
        "ratio": {
            m: statistics.median(a / j for a, j in zip(t, times["joint"], strict=True))
            for m, t in times.items()
        },  # noqa: E501
        "rounds": rounds,
    }


def method_models() -> list[tuple[str, str, list[str], dict, SplitBatches]]:
    """(name, preset, sets, model info, train batches): mfeat's MLPs and the crema-d ResNet-18s."""
    mfeat = resolve_preset("mfeat")
    data = open_data(mfeat, None)
    out = [("mfeat", "mfeat", [], model_info(mfeat, data, None),
            SplitBatches(data.split("train"), mfeat.modality_names, DEVICE))]  # fmt: skip
    rng = np.random.default_rng(0)
    n = 8 * BATCH
    split = SplitArrays(
        {
            "audio": rng.standard_normal((n, 257, 188), dtype=np.float32),
            "video": rng.integers(0, 256, (n, 1, 3, 64, 64), dtype=np.uint8),
        },
        rng.integers(0, 6, n),
    )
    shapes = {"audio": [257, 188], "video": [1, 3, 64, 64]}
    info = {"input_shapes": shapes, "classes": [str(c) for c in range(6)]}
    sets = ["modalities.video.input.size=64"]
    out.append(("resnet18", "crema-d", sets, info, SplitBatches(split, ["audio", "video"], DEVICE)))
    return out


def print_methods(rows: list[dict]) -> None:
    print("\nper method: one batch (all its optimizer steps) relative to a plain joint step")
    print("(same model, batch and optimizer; SAM with each method's own rho)")
    print(f"  {'model':<9} " + " ".join(f"{m:>14}" for m in METHOD_ORDER))
    for row in rows:
        cells = [f"{row['step_ms'][m]:7.1f}ms ×{row['ratio'][m]:.2f}" for m in METHOD_ORDER]
        print(f"  {row['name']:<9} " + " ".join(f"{c:>14}" for c in cells))


# ---------------------------------------------------------------- report

LABELS = {
    "plain": "plain (fwd, bwd, SGD step)",
    "sam_on": f"IGM: SAM on (rho {RHO}) + GM",
    "sam_off": "IGM: SAM off (rho 0) + GM",
}
NOISY = 0.10  # a ratio whose IQR over rounds exceeds this share of it is flagged


def verdicts(ratio: dict[str, float]) -> dict[str, dict]:
    return {v: {"target": t, "ratio": ratio[v], "met": ratio[v] <= t} for v, t in TARGETS.items()}


def print_model(model: dict) -> None:
    stage = model["stage"]
    print(f"\n[{model['name']}] {model['description']}")
    print(
        f"  stage {stage['index']}: trains {stage['active']} with T of {stage['source']} on "
        f"{', '.join(stage['paired'])}; {model['rounds_done']} rounds"
    )
    print(f"  {'variant':<32} {'ms/step':>8} {'IQR':>7} {'IGM/plain':>10} {'±IQR':>6}  target")
    for v in VARIANTS:
        ratio, spread, target = 1.0, "", ""
        if v in model["ratio"]:
            ratio, r_iqr = model["ratio"][v], model["ratio_iqr"][v]
            spread = f"{r_iqr:.2f}" + ("!" if r_iqr > NOISY * ratio else "")
        if model["verdicts"] and v in model["verdicts"]:
            verdict = model["verdicts"][v]
            target = f"≤ {verdict['target']:.2f}  {'MET' if verdict['met'] else 'NOT MET'}"
        print(
            f"  {LABELS[v]:<32} {model['step_ms'][v]:>8.3f} {model['iqr_ms'][v]:>7.3f} "
            f"{ratio:>10.2f} {spread:>6}  {target}"
        )
    print("  fixed per-step costs (median µs per call):")
    plain_us = 1e3 * model["step_ms"]["plain"]
    for name, us in model["fixed_us"].items():
        print(f"    {name:<52} {us:>9.1f}  ({us / plain_us:6.1%} of a plain step)")


def print_table(results: dict) -> None:
    s = results["settings"]
    print(
        f"IGM step overhead — torch {s['torch']}, torch threads {s['threads']}, batch {s['batch']}, "
        f"rho {s['rho']}, tau {s['tau']}, optimizer {s['optimizer']}; "
        f"medians of interleaved rounds (≤ {s['rounds']}); IGM/plain = median over rounds of the "
        f"paired block ratio"
    )
    for model in results["models"]:
        print_model(model)
    print()
    noisy = [
        f"{m['name']}/{v}"
        for m in results["models"]
        for v, r in m["ratio"].items()
        if m["ratio_iqr"][v] > NOISY * r
    ]
    if s["load_before"] > s["cpus"] - s["threads"] + 0.5:
        print(
            f"warning: load average {s['load_before']} on {s['cpus']} CPUs before the run: other processes "
            f"hold cores torch's {s['threads']} thread(s) need; a parallel op then waits for a scheduler "
            "tick (ms) and steps stall" + ("; try --threads 1" if s["threads"] > 1 else "")
        )
    if noisy:
        print(f"warning: noisy ratios (IQR > {NOISY:.0%}, marked !): {', '.join(noisy)}; the machine is busy")
    for model in results["models"]:
        for v, verdict in (model["verdicts"] or {}).items():
            state = "met" if verdict["met"] else "NOT met"
            caveat = " (noisy, rerun to confirm)" if f"{model['name']}/{v}" in noisy else ""
            print(
                f"{model['name']}: IGM/plain with {v.replace('_', ' ')} = {verdict['ratio']:.2f}, "
                f"target ≤ {verdict['target']:.2f}: {state}{caveat}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (about 15 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--methods-only", action="store_true", help="only the per-method table")
    parser.add_argument("--scope", action="store_true", help="also gm.scope=fraction 0.3 vs head (minutes)")
    parser.add_argument("--scope-only", action="store_true", help="only gm.scope=fraction 0.3 vs head")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # many short blocks: a burst of load from elsewhere spoils a few rounds, not the median
    rounds, block_seconds, fixed_n = (9, 0.02, 300) if args.quick else (41, 0.04, 2000)
    steps_budget, fixed_budget = (4.0, 1.0) if args.quick else (20.0, 4.0)  # seconds per model

    load_before = round(os.getloadavg()[0], 2)  # 1-min load average: others' work on the same cores
    if args.scope_only:
        return scope_main(args.quick, args.json, load_before)
    started = time.perf_counter()
    models = []
    method_rows = [
        measure_methods(name, p, sets, info, train, 3 if args.quick else 9, 10 * block_seconds)
        for name, p, sets, info, train in method_models()
    ]
    for bench in () if args.methods_only else (mfeat_bench(), paper_bench()):
        steps = measure_steps(bench, rounds, block_seconds, steps_budget)
        stage = bench.stage
        models.append(
            {
                "name": bench.name,
                "description": bench.description,
                "stage": {
                    "index": stage.index,
                    "active": stage.active[0],
                    "source": stage.source,
                    "paired": [p.name for p in bench.projector._active],
                },
                **steps,
                "fixed_us": measure_fixed(bench, fixed_n, fixed_budget),
                "verdicts": verdicts(steps["ratio"]) if bench.name == "resnet18" else None,
            }
        )
    preset = resolve_preset("mfeat")
    results = {
        "settings": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "batch": BATCH,
            "rho": RHO,
            "tau": preset.gm.tau,
            "optimizer": f"{preset.optimizer.name} (momentum {preset.optimizer.momentum})",
            "rounds": rounds,
            "block_seconds": block_seconds,
        },
        "targets": TARGETS,
        "models": models,
        "methods": method_rows,
        "scope": scope_overhead.run(args.quick) if args.scope else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        if models:
            print_table(results)
        print_methods(method_rows)
        if results["scope"]:
            scope_overhead.print_report(results["scope"])
        print(f"\n({results['seconds']} s)")
    return 0


def scope_main(quick: bool, as_json: bool, load_before: float) -> int:
    """Only the gm.scope=fraction 0.3 vs head measurements (bench/scope_overhead.py)."""
    result = {"load_before": load_before, "cpus": os.cpu_count(), **scope_overhead.run(quick)}
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        threads, cpus = result["threads"], result["cpus"]
        print(f"torch {torch.__version__}, {threads} thread(s), load average {load_before} on {cpus} CPUs")
        scope_overhead.print_report(result)
        print(f"\n({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
