"""2-rank torchrun jobs (gloo, CPU) on the embedded dataset against one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from igm_cli.checkpoint import load_checkpoint
from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from tests.distributed import patches
from tests.distributed.launcher import launch
from tests.helpers import TINY_SETS, set_args

FAST = [*TINY_SETS, "data.batch_size=48"]  # 25 global batches of 48 (24 per rank) an epoch
LEARNS = [*TINY_SETS, "data.batch_size=24", "optimizer.lr=0.05"]  # one process: test accuracy 0.58


def tensors(run: Path, kind: str = "last") -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(run / f"{kind}.safetensors")
    return {k: v for k, v in ckpt.tensors.items() if k.startswith(("model.", "gm.", "mla."))}


def only_run(parent: Path) -> Path:
    (run,) = [p for p in parent.iterdir() if p.is_dir()]
    return run


def worst_relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for k in a:
        if a[k].is_floating_point():
            x, y = a[k].double(), b[k].double()
            worst = max(worst, float((x - y).norm() / y.norm().clamp_min(1e-30)))
        else:
            assert torch.equal(a[k], b[k]), k
    return worst


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """One process, 2 ranks (global and local SAM), a 2-rank run interrupted on rank 1 and resumed."""
    root = tmp_path_factory.mktemp("ddp")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        out = {"root": root}
        train(resolve_preset("mfeat", FAST), runs_dir=root / "one")
        train(resolve_preset("mfeat", LEARNS), runs_dir=root / "one-learns")
        out["two"] = launch(["-q", "--runs-dir", "two", *set_args(FAST)])
        out["local"] = launch(["-q", "--runs-dir", "local", *set_args([*LEARNS, "sam.ddp=local"])])
        out["stopped"] = launch(["-q", "--runs-dir", "cut", *set_args(FAST)], patch=patches.interrupt_rank1)
        shutil.copytree(root / "cut", root / "cut-for-one")
        out["resumed"] = launch(["-q", "--resume", str(only_run(root / "cut"))])
        train(None, resume=str(only_run(root / "cut-for-one")))
        yield out
    finally:
        os.chdir(cwd)


def test_global_sam_equals_one_process_with_the_global_batch(jobs):
    root = jobs["root"]
    assert jobs["two"][0] == {0: 0, 1: 0}
    one, two = only_run(root / "one"), only_run(root / "two")
    assert worst_relative(tensors(two), tensors(one)) <= 1e-5  # weights, every T and covariance
    results = json.loads((two / "results.json").read_text())
    assert results["distributed"]["world_size"] == 2
    assert results["distributed"]["per_rank_batch"] == [24, 24]
    assert results["distributed"]["global_batch"] == 48
    lines = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in lines] == [r["kind"] for r in ref]  # rank 0 alone wrote it
    for mine, theirs in zip(lines, ref, strict=True):
        if mine["kind"] == "epoch":
            assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
            assert mine["val"]["fused"]["accuracy"] == pytest.approx(
                theirs["val"]["fused"]["accuracy"], abs=0.01
            )


def test_local_sam_differs_and_still_learns(jobs):
    root = jobs["root"]
    assert jobs["local"][0] == {0: 0, 1: 0}
    local, one = only_run(root / "local"), only_run(root / "one-learns")
    assert worst_relative(tensors(local), tensors(one)) > 1e-4  # one process = global SAM (test above)
    results = json.loads((local / "results.json").read_text())
    assert results["distributed"]["sam_ddp"] == "local"
    assert results["test"]["fused"]["accuracy"] > 0.4  # chance is 0.1


def test_an_interrupt_on_one_rank_stops_every_rank_and_resumes_exactly(jobs):
    root = jobs["root"]
    assert jobs["stopped"][0] == {0: 130, 1: 130}
    cut = only_run(root / "cut")
    assert jobs["resumed"][0] == {0: 0, 1: 0}
    # same N: bit for bit the uninterrupted 2-rank run
    uninterrupted = tensors(only_run(root / "two"))
    resumed = tensors(cut)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    # resumed on 1 process: the same computation up to float summation order
    assert worst_relative(tensors(only_run(root / "cut-for-one")), uninterrupted) <= 1e-5
