"""How close a 2-rank torchrun run ends to `igm train`: the largest relative weight difference, in one run.

Trains the same preset three times from this checkout: one process (1 thread), two
gloo ranks through torch.distributed.run, and one process with 2 threads (another
float summation order, for scale). Prints max ‖a − b‖/‖b‖ over every weight, T and
covariance of last.safetensors against the first run, and the test accuracies.

    python bench/ddp_equivalence.py [--set key=value ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from igm_cli.checkpoint import load_checkpoint  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run(launcher: list[str], sets: list[str], root: Path, name: str, threads: int = 1) -> Path:
    """Train into root/name; returns the run directory."""
    args = ["-m", "igm_cli", "train", "-q", "--threads", str(threads), "--runs-dir", str(root / name)]
    args += [a for s in sets for a in ("--set", s)]
    done = subprocess.run([sys.executable, *launcher, *args], env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    (directory,) = (root / name).iterdir()
    return directory


def largest_difference(a: Path, b: Path) -> float:
    """max over float tensors of ‖a − b‖/‖b‖ (model weights and buffers, gm.T, gm.cov, mla.P)."""
    x, y = load_checkpoint(a / "last.safetensors").tensors, load_checkpoint(b / "last.safetensors").tensors
    keys = [k for k in y if k.startswith(("model.", "gm.", "mla.")) and y[k].is_floating_point()]
    return max(
        float((x[k].double() - y[k].double()).norm() / y[k].double().norm().clamp_min(1e-30)) for k in keys
    )


def accuracy(run_dir: Path) -> dict[str, float]:
    """Test accuracy per branch and fused."""
    test = json.loads((run_dir / "results.json").read_text())["test"]
    return {k: round(v["accuracy"], 4) for k, v in test.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="igm-ddp-eq-"))
    one = run([], args.sets, root, "one")
    two = run(
        ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"], args.sets, root, "two"
    )
    threads = run([], args.sets, root, "threads2", threads=2)
    result = {
        "sets": args.sets,
        "two_ranks_vs_one": largest_difference(two, one),
        "two_threads_vs_one": largest_difference(threads, one),
        "test_accuracy": {"one": accuracy(one), "two_ranks": accuracy(two), "two_threads": accuracy(threads)},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"preset mfeat {' '.join(args.sets)}")
    print(f"  2 ranks   vs 1 process: largest relative difference {result['two_ranks_vs_one']:.1e}")
    print(f"  2 threads vs 1 thread:  largest relative difference {result['two_threads_vs_one']:.1e}")
    for name, acc in result["test_accuracy"].items():
        print(f"  test accuracy {name:12s} {acc}")


if __name__ == "__main__":
    main()
