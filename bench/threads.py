"""One thread vs torch's default: seconds per training step by model size, in one run.

Times plain SGD steps (cross-entropy, backward, step; batch 12 like the presets) of
MLP branches from the mfeat size up, and of the crema-d preset's ResNet-18 audio branch,
alternating 1 thread and torch's default thread count in blocks, and prints the median
ratio default/1 per model: above 1, the extra threads cost time. igm_cli.threads picks its
default (SMALL_MODEL_PARAMS) from this table.

    python bench/threads.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_THREADS = torch.get_num_threads()


def mlp(width: int, dim_in: int = 76, classes: int = 10) -> torch.nn.Module:
    """An mfeat-like branch: encoder [width] → 64 → head 256, 64 → classes."""
    return torch.nn.Sequential(
        torch.nn.Linear(dim_in, width), torch.nn.BatchNorm1d(width), torch.nn.ReLU(),
        torch.nn.Linear(width, 64), torch.nn.Linear(64, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 64), torch.nn.Linear(64, classes),
    )  # fmt: skip


def resnet_branch() -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The crema-d preset's audio branch (ResNet-18 from scratch), input 1×257×188."""
    from igm_cli.models import build_model
    from igm_cli.presets import resolve_preset

    preset = resolve_preset("crema-d", ["modalities.video.input.size=64"])
    shapes = {"audio": [257, 188], "video": [1, 3, 64, 64]}
    model = build_model(preset, shapes, 6)
    branch = model.branch("audio")
    return torch.nn.Sequential(branch), (1, 257, 188)


def seconds_per_step(model: torch.nn.Module, shape: tuple[int, ...], threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(12, *shape), torch.randint(0, 6, (12,))
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def measure(model: torch.nn.Module, shape: tuple[int, ...], rounds: int, steps: int) -> dict:
    ones, defaults = [], []
    seconds_per_step(model, shape, 1, 2)  # warm-up
    for r in range(rounds):
        order = (1, DEFAULT_THREADS) if r % 2 == 0 else (DEFAULT_THREADS, 1)
        for t in order:
            (ones if t == 1 else defaults).append(seconds_per_step(model, shape, t, steps))
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "ms_per_step_1": 1e3 * statistics.median(ones),
        f"ms_per_step_{DEFAULT_THREADS}": 1e3 * statistics.median(defaults),
        "ratio_default_over_1": statistics.median(d / o for d, o in zip(defaults, ones, strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = {}
    for width in (128, 1024, 4096, 16384):
        rows[f"mlp hidden {width}"] = measure(mlp(width), (76,), args.rounds, 200 if width < 4096 else 40)
    model, shape = resnet_branch()
    rows["crema-d audio ResNet-18"] = measure(model, shape, args.rounds, 3)
    if args.json:
        print(json.dumps({"default_threads": DEFAULT_THREADS, "models": rows}, indent=2))
        return
    print(f"torch default threads: {DEFAULT_THREADS}")
    print(f"{'model':<26}{'params':>12}{'ms/step 1':>12}{'ms/step def':>13}{'default/1':>11}")
    for name, r in rows.items():
        d = r[f"ms_per_step_{DEFAULT_THREADS}"]
        print(
            f"{name:<26}{r['params']:>12,}{r['ms_per_step_1']:>12.2f}{d:>13.2f}{r['ratio_default_over_1']:>11.2f}"
        )


if __name__ == "__main__":
    main()
