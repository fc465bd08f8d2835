"""Shapley values of the branches for the fused accuracy: exact over subsets, or sampled.

φ_i = Σ_{S ⊆ N∖{i}} |S|! (n−|S|−1)! / n! · (v(S ∪ {i}) − v(S)); they sum to v(N) − v(∅)
(efficiency). Sampling averages marginal gains over random orders of the players; every
order telescopes to v(N) − v(∅), so sampled values keep that sum exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from math import factorial

import torch

Value = Callable[[frozenset[str]], float]

EXACT_UP_TO = 4
"""Branches up to which every subset is evaluated (2^m values); beyond, orders are sampled."""
PERMUTATIONS = 256
"""Random orders of the sampled estimate."""


def cached(value: Value) -> Value:
    """`value` evaluated once per subset."""
    memo: dict[frozenset[str], float] = {}

    def lookup(subset: frozenset[str]) -> float:
        if subset not in memo:
            memo[subset] = value(subset)
        return memo[subset]

    return lookup


def exact_shapley(players: Sequence[str], value: Value) -> dict[str, float]:
    """φ of every player from all 2^n subsets."""
    n = len(players)
    phi = {}
    for i in players:
        others = [p for p in players if p != i]
        total = 0.0
        for size in range(n):
            weight = factorial(size) * factorial(n - size - 1) / factorial(n)
            for subset in combinations(others, size):
                s = frozenset(subset)
                total += weight * (value(s | {i}) - value(s))
        phi[i] = total
    return phi


def sampled_shapley(
    players: Sequence[str], value: Value, permutations: int = PERMUTATIONS, seed: int = 0
) -> dict[str, float]:
    """φ estimated by the mean marginal gain over `permutations` seeded random orders."""
    generator = torch.Generator().manual_seed(seed)
    phi = dict.fromkeys(players, 0.0)
    for _ in range(permutations):
        order = [players[k] for k in torch.randperm(len(players), generator=generator).tolist()]
        before: frozenset[str] = frozenset()
        for player in order:
            after = before | {player}
            phi[player] += value(after) - value(before)
            before = after
    return {p: v / permutations for p, v in phi.items()}


def shapley(players: Sequence[str], value: Value, seed: int = 0) -> tuple[dict[str, float], str]:
    """(φ, "exact" | "sampled") — exact for at most EXACT_UP_TO players."""
    value = cached(value)
    if len(players) <= EXACT_UP_TO:
        return exact_shapley(players, value), "exact"
    return sampled_shapley(players, value, PERMUTATIONS, seed), "sampled"
