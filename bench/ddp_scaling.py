"""Samples/s of 1 vs N gloo processes (torch DDP) and the communication share of a step, in one run.

Trains the embedded mfeat preset (full model, SAM's two passes, global batch 12) for one stage
and times its steps from the trainer's step events (median over the stage, first steps
skipped), in three configurations launched through torch's elastic agent:

    one     1 process, batch 12
    ranks   N processes, global batch 12 (12/N per rank)
    shard   1 process, batch 12/N: one rank's compute without any communication

samples/s = 12 / step time; the communication share of an N-rank step is
(ranks − shard) / ranks: what a rank spends beyond its own compute (collectives, and on
a machine with fewer free cores than ranks, waiting for its peer to be scheduled). On a
GPU machine `--device cuda` gives the scaling across devices (NCCL).

    python bench/ddp_scaling.py [--nproc 2] [--steps 100] [--device cpu] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch._dynamo  # noqa: E402, F401  (DDP imports it; inherited by the forked workers)
from torch.distributed.launcher.api import LaunchConfig, elastic_launch  # noqa: E402

from igm_cli.pipeline import train  # noqa: E402
from igm_cli.presets import resolve_preset  # noqa: E402

GLOBAL_BATCH = 12


def worker(sets: list[str], out: str, device: str) -> None:
    """Train one stage; rank 0 writes the step times."""
    stamps: list[float] = []

    def on_event(kind, payload):
        if kind == "step":
            stamps.append(time.perf_counter())

    os.chdir(tempfile.mkdtemp(prefix="igm-bench-"))
    train(resolve_preset("mfeat", sets), device=device, on_event=on_event)
    if os.environ.get("RANK", "0") == "0":
        Path(out).write_text(json.dumps(stamps))


def step_seconds(nproc: int, batch: int, steps: int, device: str) -> float:
    """Median seconds per step of a one-stage run on `nproc` processes."""
    epochs = max(1, -(-steps * batch // 1200))
    sets = [f"stages.epochs=[{epochs}]", f"data.batch_size={batch}"]
    out = Path(tempfile.mkdtemp(prefix="igm-bench-")) / "stamps.json"
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex, rdzv_backend="c10d",
        rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.05, start_method="fork",
    )  # fmt: skip
    elastic_launch(config, worker)(sets, str(out), device)
    stamps = json.loads(out.read_text())[5:]  # the first steps warm up
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    one = step_seconds(1, GLOBAL_BATCH, args.steps, args.device)
    ranks = step_seconds(args.nproc, GLOBAL_BATCH, args.steps, args.device)
    shard = step_seconds(1, GLOBAL_BATCH // args.nproc, args.steps, args.device)
    result = {
        "nproc": args.nproc,
        "device": args.device,
        "global_batch": GLOBAL_BATCH,
        "samples_per_s": {"1 process": GLOBAL_BATCH / one, f"{args.nproc} processes": GLOBAL_BATCH / ranks},
        "speedup": one / ranks,
        "step_ms": {"one": one * 1e3, "ranks": ranks * 1e3, "shard": shard * 1e3},
        "communication_share": max(0.0, (ranks - shard) / ranks),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"mfeat, SAM (2 passes), global batch {GLOBAL_BATCH}, {args.device}")
    print(f"  1 process          {GLOBAL_BATCH / one:8.0f} samples/s  ({one * 1e3:.2f} ms/step)")
    print(
        f"  {args.nproc} processes        {GLOBAL_BATCH / ranks:8.0f} samples/s  ({ranks * 1e3:.2f} ms/step)"
    )
    print(f"  speedup            {result['speedup']:8.2f}x")
    per_rank = GLOBAL_BATCH // args.nproc
    print(f"  one rank's compute {shard * 1e3:8.2f} ms/step (batch {per_rank}, no collectives)")
    print(f"  communication share of a {args.nproc}-rank step: {result['communication_share']:.0%}")


if __name__ == "__main__":
    main()
