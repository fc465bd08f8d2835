"""gm.scope=fraction 0.3 vs the head-only scope on the paper's CREMA-D audio branch (Table 4).

Run through `python bench/step_overhead.py --scope-only` (or with the other tables). Two
measurements, each a ratio from one run:

1. The IGM step (the engine's Trainer._step: SAM's two passes, then T on every paired
   layer, then SGD) on the ResNet-18 audio branch at CREMA-D's input size (1×257×188) and
   batch (12) under the video branch's T: scope=fraction 0.3 (head + the two last layer4
   convolutions, T of side 4608) vs scope=head. Blocks alternate, the order rotates, the
   ratio is the median over rounds of the paired block ratio.
2. The per-stage T computation (one float64 eigh per scoped layer, FlatProjector.set_covariances
   on the audio branch's collected covariances) and the covariance pass's extra cost, against
   the stage's training time, estimated as the measured fraction-scope step time × the
   crema-d preset's steps in its shorter (audio) stage: 25 epochs × ⌈6028 / 12⌉ batches
   (6,698 training clips minus igm's 10 % validation split, data/crema_d.py).
"""

from __future__ import annotations

import gc
import math
import statistics
import time

import numpy as np
import torch

from igm_cli.console.gm_layers import short_layer
from igm_cli.data.prepared import SplitArrays
from igm_cli.engine.batches import SplitBatches, epoch_order
from igm_cli.engine.optim import build_optimizer
from igm_cli.engine.sam import SamStep
from igm_cli.engine.trainer import Trainer, TrainerConfig
from igm_cli.methods.igm import Igm
from igm_cli.pipeline import build_for
from igm_cli.presets import resolve_preset

BATCH = 12
RHO = 0.05
TARGETS = {"step_ratio": 1.15, "T_share_of_stage": 0.03}
CREMA_TRAIN_CLIPS = 6028  # 6,698 − round(0.1 × 6,698) validation clips
AUDIO_EPOCHS = 25  # the crema-d preset's audio stages (video: 50)
SCOPES = ("head", "fraction")


class NullSink:
    """CheckpointSink that keeps nothing."""

    def save(self, kind, state, optimizer, extra=None) -> None:
        pass

    def log(self, record) -> None:
        pass


def _data(n: int) -> SplitBatches:
    rng = np.random.default_rng(0)
    split = SplitArrays(
        {
            "audio": rng.standard_normal((n, 257, 188), dtype=np.float32),
            "video": rng.integers(0, 256, (n, 1, 3, 64, 64), dtype=np.uint8),
        },
        rng.integers(0, 6, n),
    )
    return SplitBatches(split, ["audio", "video"], torch.device("cpu"))


def build(n_batches: int) -> dict:
    """The crema-d model, one Igm method per scope, each at stage 2 (audio under video's T)."""
    sets = ["modalities.video.input.size=64"]
    presets = {s: resolve_preset("crema-d", [*sets, f"gm.scope={s}", "gm.fraction=0.3"]) for s in SCOPES}
    info = {
        "input_shapes": {"audio": [257, 188], "video": [1, 3, 64, 64]},
        "classes": [str(c) for c in range(6)],
    }
    torch.manual_seed(0)
    model = build_for(presets["head"], info, torch.device("cpu"))
    train = _data(n_batches * BATCH)
    order = epoch_order(len(train), 0, 1, 0)
    out = {"model": model, "train": train, "steps": {}, "methods": {}}
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for scope, preset in presets.items():
        method = Igm(preset)
        stage = method.schedule()[2]
        video = (
            model.branch("video").prepare(x["video"], train=False) for x, _ in train.iterate(BATCH, order)
        )
        method.projector.collect(model, "video", video)
        method.begin_stage(model, stage, None)
        config = TrainerConfig(BATCH, 256, preset.fusion, preset.selection, preset.seed)
        trainer = Trainer(model, method, make_optimizer=None, lr_at=None, train=train, val=train,
                          sam=SamStep(RHO), config=config, sink=NullSink())  # fmt: skip
        params = trainer._activate(stage)
        (substep,) = method.substeps(model, stage, params)
        optimizer = build_optimizer(preset.optimizer, params)
        out["steps"][scope] = (trainer, substep, optimizer)
        out["methods"][scope] = method
    out["batches"] = [(model.prepare(x, train=True), y) for x, y in train.iterate(BATCH, order)]

    def reset() -> None:  # the starting weights and empty momentum for every block
        model.load_state_dict(start)
        for _, _, optimizer in out["steps"].values():
            optimizer.state.clear()

    out["reset"] = reset
    return out


def _block(b: dict, scope: str, n: int) -> float:
    trainer, substep, optimizer = b["steps"][scope]
    b["reset"]()
    gc.collect()
    start = time.perf_counter()
    for i in range(n):
        trainer._step(substep, optimizer, *b["batches"][i % len(b["batches"])])
    return (time.perf_counter() - start) / n


def measure_steps(b: dict, rounds: int, steps_per_block: int) -> dict:
    """Seconds per IGM step for each scope in interleaved blocks; ratio fraction/head per round."""
    for scope in SCOPES:
        _block(b, scope, 2)  # warm-up
    times: dict[str, list[float]] = {s: [] for s in SCOPES}
    for r in range(rounds):
        for scope in SCOPES[r % 2 :] + SCOPES[: r % 2]:
            times[scope].append(_block(b, scope, steps_per_block))
    ratios = [f / h for f, h in zip(times["fraction"], times["head"], strict=True)]
    return {
        "step_ms": {s: 1e3 * statistics.median(t) for s, t in times.items()},
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "rounds": rounds,
        "steps_per_block": steps_per_block,
    }


def measure_apply(b: dict, n: int) -> dict[str, float]:
    """Milliseconds of projector.apply() alone per scope (T·∇W on every paired layer)."""
    out = {}
    for scope in SCOPES:
        trainer, substep, optimizer = b["steps"][scope]
        b["reset"]()
        trainer._step(substep, optimizer, *b["batches"][0])  # leaves projected gradients in .grad
        saved = [p.grad.clone() for p in substep.params if p.grad is not None]
        grads = [p for p in substep.params if p.grad is not None]
        samples = []
        for _ in range(n):
            for p, g in zip(grads, saved, strict=True):
                p.grad.copy_(g)
            start = time.perf_counter()
            b["methods"][scope].projector.apply()
            samples.append(time.perf_counter() - start)
        out[scope] = 1e3 * statistics.median(samples)
    return out


def measure_T(b: dict, n_batches: int, repeats: int) -> dict:
    """The stage-end work for the trained (audio) branch: covariance pass per batch, then eigh."""
    model, train = b["model"], b["train"]
    projector = b["methods"]["fraction"].projector
    order = epoch_order(len(train), 0, 2, 0)
    audio = [model.branch("audio").prepare(x["audio"], train=False) for x, _ in train.iterate(BATCH, order)]
    pass_s = {}
    for scope in SCOPES:
        p = b["methods"][scope].projector
        start = time.perf_counter()
        covs = p.accumulate(model, "audio", audio[:n_batches])
        pass_s[scope] = (time.perf_counter() - start) / n_batches
        if scope == "fraction":
            fraction_covs = covs
    sizes = {name: c.shape[0] for name, c in fraction_covs.items()}
    eigh_s = []
    for _ in range(repeats):
        start = time.perf_counter()
        projector.set_covariances("audio", fraction_covs)
        eigh_s.append(time.perf_counter() - start)
    return {"pass_s_per_batch": pass_s, "T_seconds": statistics.median(eigh_s), "T_sides": sizes}


def run(quick: bool) -> dict:
    """Both measurements and the verdicts against the targets."""
    started = time.perf_counter()
    b = build(4 if quick else 8)
    steps = measure_steps(b, 3 if quick else 7, 2 if quick else 4)
    apply_ms = measure_apply(b, 3 if quick else 10)
    T = measure_T(b, 2 if quick else 4, 1 if quick else 2)
    batches_per_epoch = math.ceil(CREMA_TRAIN_CLIPS / BATCH)
    stage_steps = AUDIO_EPOCHS * batches_per_epoch
    stage_s = stage_steps * steps["step_ms"]["fraction"] / 1e3
    extra_pass_s = batches_per_epoch * (T["pass_s_per_batch"]["fraction"] - T["pass_s_per_batch"]["head"])
    layers = b["methods"]["fraction"].projector.pairs
    # the per-step work that differs between the scopes is projector.apply: timed alone it is far
    # less noisy than two whole steps on a busy machine
    from_apply = 1 + (apply_ms["fraction"] - apply_ms["head"]) / steps["step_ms"]["head"]
    return {
        "layers": list(layers),
        "steps": steps,
        "apply_ms": apply_ms,
        "step_ratio_from_apply": from_apply,
        "T": T,
        "stage": {"steps": stage_steps, "seconds": stage_s, "batches_per_epoch": batches_per_epoch},
        "T_share_of_stage": T["T_seconds"] / stage_s,
        "extra_pass_share_of_stage": extra_pass_s / stage_s,
        "targets": TARGETS,
        "met": {
            "step_ratio": steps["ratio"] <= TARGETS["step_ratio"],
            "T_share_of_stage": T["T_seconds"] / stage_s <= TARGETS["T_share_of_stage"],
        },
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def print_report(r: dict) -> None:
    """The scope table: step ratio, apply cost, T per stage against the stage's training time."""
    s, T, st = r["steps"], r["T"], r["stage"]
    print(
        "\ngm.scope=fraction 0.3 vs head, crema-d audio branch (ResNet-18, 1×257×188, batch 12, SAM ρ 0.05)"
    )
    print(f"  layers with T under fraction 0.3: {', '.join(short_layer(n) for n in r['layers'])}")
    print(f"  IGM step, head scope      {s['step_ms']['head']:9.1f} ms")
    print(f"  IGM step, fraction 0.3    {s['step_ms']['fraction']:9.1f} ms")
    lo, hi = s["ratio_range"]
    verdict = "MET" if r["met"]["step_ratio"] else "NOT MET"
    print(
        f"  fraction / head           {s['ratio']:9.3f}   (rounds {s['rounds']}, range {lo:.3f}–{hi:.3f}; "
        f"target ≤ {r['targets']['step_ratio']}: {verdict})"
    )
    apply_ms = r["apply_ms"]
    print(f"  projector.apply alone: head {apply_ms['head']:.2f} ms, fraction {apply_ms['fraction']:.1f} ms")
    print(f"  1 + (apply fraction − apply head) / head step = {r['step_ratio_from_apply']:.3f}")
    sides = ", ".join(f"{short_layer(n)} {d}" for n, d in T["T_sides"].items())
    print(f"  T per stage (float64 eigh of each scoped covariance; sides {sides}): {T['T_seconds']:.1f} s")
    print(
        f"  stage estimate: {st['steps']} steps (25 epochs × {st['batches_per_epoch']} batches) × "
        f"{s['step_ms']['fraction']:.0f} ms = {st['seconds'] / 3600:.2f} h"
    )
    verdict = "MET" if r["met"]["T_share_of_stage"] else "NOT MET"
    print(
        f"  T computation / stage     {r['T_share_of_stage']:9.2%}   (target ≤ "
        f"{r['targets']['T_share_of_stage']:.0%}: {verdict})"
    )
    pass_ms = {k: 1e3 * v for k, v in T["pass_s_per_batch"].items()}
    print(
        f"  covariance pass per batch: head {pass_ms['head']:.0f} ms, fraction {pass_ms['fraction']:.0f} ms; "
        f"its extra cost per stage {r['extra_pass_share_of_stage']:.2%} of the stage"
    )
