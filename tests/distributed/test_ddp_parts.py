"""The pieces of a 2-rank step against one process: BatchNorm statistics, Ȳ and T, sharded evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from igm_cli.distributed.ddp import DataParallel
from igm_cli.distributed.global_bn import to_global_batch_norm
from igm_cli.distributed.setup import check_split
from igm_cli.distributed.world import World, join_world
from igm_cli.engine.batches import SplitBatches, epoch_order
from igm_cli.engine.evaluate import evaluate_model
from igm_cli.engine.flat_projector import FlatProjector
from igm_cli.engine.sharded import evaluate_sharded
from igm_cli.pipeline import build_for, model_info, open_data
from igm_cli.presets import resolve_preset
from tests.distributed.launcher import launch_function
from tests.helpers import TINY_SETS

SETS = [*TINY_SETS, "data.batch_size=13"]  # 7/6 per rank; 1200 = 92·13 + 4: a last batch of 4 (2/2)


def setup():
    preset = resolve_preset("mfeat", SETS)
    data = open_data(preset, None)
    model = build_for(preset, model_info(preset, data, None), torch.device("cpu"))
    return preset, data, model


def rows(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(0)) * 3 + 1
    return x, x.tensor_split(2)[rank] if rank >= 0 else x


def _worker(out: str) -> None:
    world = join_world(torch.device("cpu"))
    preset, data, model = setup()
    to_global_batch_norm(model)
    train = SplitBatches(data.split("train"), ["fou", "kar"], torch.device("cpu"))
    val = SplitBatches(data.split("val"), ["fou", "kar"], torch.device("cpu"))
    parallel = DataParallel(world, preset.seed)
    projector = FlatProjector(preset.gm.tau)
    order = epoch_order(len(train), preset.seed, 0, 1)
    batches = (
        model.branch("fou").prepare(x["fou"], False) for x, _ in parallel.whole_batches(train, 13, order)
    )
    projector.collect(model, "fou", batches, world)
    metrics = evaluate_sharded(world, model, val, 256, "mean")
    # BatchNorm: 7 + 5 rows of one batch of 12, gradient weighted by the rank's share
    bn = to_global_batch_norm(torch.nn.BatchNorm1d(5))
    _, x = rows(world.rank)
    y = bn(x)
    (y * torch.arange(5.0)).sum().mul(1 / 12).backward()  # Σ over the global batch / 12
    grads = torch.cat([bn.weight.grad, bn.bias.grad])
    world.all_reduce_(grads)
    tensors = {
        **projector.state_tensors(),
        "bn.grads": grads,
        "bn.mean": bn.running_mean,
        "bn.var": bn.running_var,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/rank{world.rank}.safetensors")
    Path(f"{out}/metrics{world.rank}.json").write_text(json.dumps(metrics))
    world.close()


def test_two_ranks_compute_what_one_process_computes(tmp_path):
    launch_function(_worker, str(tmp_path))
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1)]
    # T (and Ȳ) identical on both ranks, bit for bit
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    # ... and equal to one process collecting over every batch in order (float64 sums: ~1e-15)
    preset, data, model = setup()
    train = SplitBatches(data.split("train"), ["fou", "kar"], torch.device("cpu"))
    order = epoch_order(len(train), preset.seed, 0, 1)
    projector = FlatProjector(preset.gm.tau)
    projector.collect(
        model, "fou", (model.branch("fou").prepare(x["fou"], False) for x, _ in train.iterate(13, order))
    )
    single = projector.state_tensors()
    assert single.keys() == {k for k in ranks[0] if k.startswith("gm.")}
    for k, v in single.items():
        torch.testing.assert_close(ranks[0][k], v, rtol=1e-12, atol=1e-15)
    # sharded evaluation: the single-process metrics exactly
    val = SplitBatches(data.split("val"), ["fou", "kar"], torch.device("cpu"))
    expected = json.loads(json.dumps(evaluate_model(model, val, 256, "mean")))
    for r in (0, 1):
        assert json.loads((tmp_path / f"metrics{r}.json").read_text()) == expected
    # BatchNorm over the global batch: gradients and running statistics of BatchNorm1d on all 12 rows
    bn = torch.nn.BatchNorm1d(5)
    x, _ = rows(-1)
    (bn(x) * torch.arange(5.0)).sum().mul(1 / 12).backward()
    torch.testing.assert_close(
        ranks[0]["bn.grads"], torch.cat([bn.weight.grad, bn.bias.grad]), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(ranks[0]["bn.mean"], bn.running_mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ranks[0]["bn.var"], bn.running_var, rtol=1e-6, atol=1e-7)


def test_a_rank_without_samples_is_refused():
    check_split(1200, 12, 2)
    check_split(1200, 13, 2)  # last batch 4: 2 each
    for n, batch in ((1200, 1), (1201, 12)):
        try:
            check_split(n, batch, 2)
        except Exception as e:
            assert "data.batch_size" in str(e) and "without data" in str(e)
        else:
            raise AssertionError("accepted")


def test_recipe_reference_is_refused_under_torchrun():
    from igm_cli.distributed.setup import data_parallel
    from igm_cli.errors import PresetError

    preset = resolve_preset("mfeat", [*SETS, "recipe=reference"])
    two = World(rank=0, size=2, backend="gloo")
    try:
        data_parallel(two, torch.nn.Linear(1, 1), preset, 1200)
    except PresetError as e:
        assert "recipe: reference" in str(e) and "torchrun" in str(e)
    else:
        raise AssertionError("accepted")


def test_one_process_world_is_a_no_op():
    world = World.single()
    t = torch.ones(3)
    assert world.all_reduce_(t) is t and world.all_gather(t) == [t] and world.broadcast_text("x") == "x"
    assert not world.distributed and world.is_writer
    assert "RANK" not in os.environ or world.rank == 0
