"""Evaluation sharded by whole batches and all-gathered, so every rank scores the single-process logits.

Rank r predicts the evaluation batches b with b mod N = r, exactly the batches (same rows,
same size) a single process predicts; the logits are gathered back into split order and
scored on every rank, so the metrics equal the single-process ones bit for bit and every
rank makes the same model-selection decision.
"""

from __future__ import annotations

import torch

from igm_cli.distributed.world import World

from .batches import SplitBatches
from .evaluate import eval_mode, evaluate_model, score


@torch.no_grad()
def evaluate_sharded(
    world: World, model, batches: SplitBatches, batch_size: int, fusion: str
) -> dict[str, dict[str, float]]:
    """evaluate_model over N ranks (the same result on every rank)."""
    if not world.distributed:
        return evaluate_model(model, batches, batch_size, fusion)
    n, size = len(batches), world.size
    bounds = [(b * batch_size, min((b + 1) * batch_size, n)) for b in range(batches.num_batches(batch_size))]
    with eval_mode(model):
        mine = [_logits(model, batches, lo, hi) for lo, hi in bounds[world.rank :: size]]
        probe = mine[0] if mine else _logits(model, batches, 0, 1)  # a rank without batches: the shape
    keys = list(probe)
    width = sum(probe[k].shape[1] for k in keys)
    rows = [sum(hi - lo for lo, hi in bounds[r::size]) for r in range(size)]
    padded = torch.zeros(max(rows), width, device=batches.device)
    if mine:
        local = torch.cat([torch.cat([z[k] for k in keys], 1) for z in mine])
        padded[: local.shape[0]] = local
    gathered = world.all_gather(padded)
    offsets = [0] * size
    ordered = []
    for b, (lo, hi) in enumerate(bounds):  # back into split order
        r = b % size
        ordered.append(gathered[r][offsets[r] : offsets[r] + hi - lo])
        offsets[r] += hi - lo
    everything = torch.cat(ordered)
    classes = width // len(keys)
    logits = {k: everything[:, i * classes : (i + 1) * classes] for i, k in enumerate(keys)}
    return score(logits, batches.labels, fusion, batch_size)


def _logits(model, batches: SplitBatches, lo: int, hi: int) -> dict[str, torch.Tensor]:
    inputs, _ = batches.take(torch.arange(lo, hi))
    return {m: z.float() for m, z in model(model.prepare(inputs, train=False)).items()}
