"""Shapley values against a brute force over every order; torch metrics against scikit-learn."""

import itertools
import random

import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score
from sklearn.metrics import confusion_matrix as sk_confusion

from igm_cli.analysis.classwise import accuracy_and_macro_f1, confusion_matrix, per_class_accuracy
from igm_cli.analysis.shapley import exact_shapley, sampled_shapley, shapley


def random_game(players, seed):
    rng = random.Random(seed)
    table = {
        frozenset(s): rng.random()
        for n in range(len(players) + 1)
        for s in itertools.combinations(players, n)
    }
    return lambda s: table[frozenset(s)]


def brute_force(players, value):
    """The definition: mean marginal gain over all n! orders."""
    phi = dict.fromkeys(players, 0.0)
    orders = list(itertools.permutations(players))
    for order in orders:
        for k, p in enumerate(order):
            phi[p] += value(frozenset(order[: k + 1])) - value(frozenset(order[:k]))
    return {p: v / len(orders) for p, v in phi.items()}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_exact_shapley_is_the_mean_marginal_gain_over_every_order(n):
    players = [f"m{i}" for i in range(n)]
    value = random_game(players, n)
    phi = exact_shapley(players, value)
    assert phi == pytest.approx(brute_force(players, value), abs=1e-12)
    assert sum(phi.values()) == pytest.approx(value(frozenset(players)) - value(frozenset()), abs=1e-12)


def test_beyond_four_players_orders_are_sampled_and_still_sum_exactly():
    players = [f"m{i}" for i in range(5)]
    value = random_game(players, 7)
    phi, how = shapley(players, value, seed=3)
    assert how == "sampled"
    assert sum(phi.values()) == pytest.approx(value(frozenset(players)) - value(frozenset()), abs=1e-12)
    assert phi == pytest.approx(brute_force(players, value), abs=0.06)  # 256 orders of 120
    assert sampled_shapley(players, value, 256, seed=3) == phi  # seeded: reproducible
    assert shapley(players[:4], value)[1] == "exact"


def test_accuracy_macro_f1_confusion_and_per_class_match_scikit_learn():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (300,), generator=g)
    labels[labels == 4] = 3  # class 4 has no samples
    predictions = torch.randint(0, 6, (300,), generator=g)  # class 5: predicted, never true
    predictions[predictions == 2] = 1  # class 2: true, never predicted
    ours = accuracy_and_macro_f1(predictions, labels, 6)
    assert ours["accuracy"] == pytest.approx(accuracy_score(labels, predictions), abs=1e-15)
    assert ours["macro_f1"] == pytest.approx(
        f1_score(labels, predictions, average="macro", zero_division=0), abs=1e-12
    )
    cm = confusion_matrix(predictions, labels, 6)
    assert cm.tolist() == sk_confusion(labels, predictions, labels=range(6)).tolist()
    recall = per_class_accuracy(cm)
    assert recall[4] is None
    assert recall[:4] == pytest.approx(
        [float((predictions[labels == c] == c).float().mean()) for c in range(4)]
    )
