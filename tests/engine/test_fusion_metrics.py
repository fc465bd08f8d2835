"""Late fusion of branch softmaxes and the classification metrics, against numpy and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

from igm_cli.engine.fusion import FUSIONS, entropy_fusion, fuse, mean_fusion
from igm_cli.engine.metrics import METRICS, classification_metrics


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def random_logits(seed: int, m: int = 3, n: int = 7, c: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"m{i}": torch.randn(n, c, generator=g, dtype=torch.float64) * (i + 1) for i in range(m)}


def np_entropy_fusion(probs: list[np.ndarray]) -> np.ndarray:
    """w_m(i) = exp(−H_m(i)) / Σ_j exp(−H_j(i)), fused(i) = Σ_m w_m(i) p_m(i)."""
    entropies = [-(p * np.log(np.where(p > 0, p, 1.0))).sum(1) for p in probs]  # 0 log 0 = 0
    w = np.exp(-np.stack(entropies))  # (m, N)
    w /= w.sum(0, keepdims=True)
    return sum(w[i][:, None] * p for i, p in enumerate(probs))


# ------------------------------------------------------------------ fusion


def test_fusion_registry():
    assert set(FUSIONS) == {"mean", "entropy"}
    assert FUSIONS["mean"] is mean_fusion and FUSIONS["entropy"] is entropy_fusion


@pytest.mark.parametrize("m", [2, 3])
def test_mean_fusion_is_average_of_softmaxes(m):
    logits = random_logits(0, m=m)
    expected = np.mean([np_softmax(z.numpy()) for z in logits.values()], axis=0)
    fused = fuse(logits, "mean")
    np.testing.assert_allclose(fused.numpy(), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fused.sum(-1).numpy(), 1.0, rtol=1e-12)


@pytest.mark.parametrize("m", [2, 3])
def test_entropy_fusion_weights_are_exp_minus_entropy_per_sample(m):
    logits = random_logits(1, m=m)
    expected = np_entropy_fusion([np_softmax(z.numpy()) for z in logits.values()])
    fused = fuse(logits, "entropy")
    np.testing.assert_allclose(fused.numpy(), expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(fused.sum(-1).numpy(), 1.0, rtol=1e-12)
    assert not np.allclose(fused.numpy(), fuse(logits, "mean").numpy())


def test_entropy_fusion_weighs_the_confident_branch_more_per_sample():
    uniform = np.full(4, 0.25)
    sharp = np.array([0.94, 0.02, 0.02, 0.02])
    a = np.stack([sharp, uniform])  # a is confident on sample 0
    b = np.stack([uniform, np.roll(sharp, 2)])  # b is confident on sample 1
    fused = entropy_fusion([torch.from_numpy(a), torch.from_numpy(b)]).numpy()
    np.testing.assert_allclose(fused, np_entropy_fusion([a, b]), rtol=1e-10)
    # the weight of the confident branch, recovered from the fused value: fused = w p_conf + (1 − w) p_unif
    w0 = (fused[0, 0] - 0.25) / (sharp[0] - 0.25)
    w1 = (fused[1, 2] - 0.25) / (sharp[0] - 0.25)
    assert w0 > 0.5 and w1 > 0.5
    assert fused[0].argmax() == 0 and fused[1].argmax() == 2
    assert fused[0, 0] > mean_fusion([torch.from_numpy(a), torch.from_numpy(b)])[0, 0]


def test_entropy_fusion_handles_exact_zeros():
    one_hot = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    uniform = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    fused = entropy_fusion([one_hot, uniform])
    assert torch.isfinite(fused).all()
    np.testing.assert_allclose(
        fused.numpy(), np_entropy_fusion([one_hot.numpy(), uniform.numpy()]), rtol=1e-12
    )


# ------------------------------------------------------------------ metrics


def sklearn_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    pred = probs.argmax(1)
    onehot = np.zeros_like(probs, dtype=int)
    onehot[np.arange(len(labels)), labels] = 1
    present = sorted(set(labels.tolist()))
    return {
        "accuracy": accuracy_score(labels, pred),
        "macro_f1": f1_score(labels, pred, average="macro", zero_division=0),
        "map": float(np.mean([average_precision_score(onehot[:, c], probs[:, c]) for c in present])),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=40)
    logits = rng.normal(size=(40, 4))
    logits[np.arange(40), labels] += 1.0  # better than chance, not perfect
    probs = np_softmax(logits)
    got = classification_metrics(probs, labels)
    assert tuple(got) == METRICS
    expected = sklearn_metrics(probs, labels)
    for name in METRICS:
        assert got[name] == pytest.approx(expected[name], rel=1e-12), name
        assert isinstance(got[name], float)
    assert 0 < got["accuracy"] < 1


def test_map_averages_only_over_present_classes():
    # class 3 never occurs in the labels: its AP is undefined and must not count as 0.
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=30)
    probs = np_softmax(rng.normal(size=(30, 4)))
    got = classification_metrics(probs, labels)
    expected = sklearn_metrics(probs, labels)
    assert got["map"] == pytest.approx(expected["map"], rel=1e-12)
    assert got["macro_f1"] == pytest.approx(expected["macro_f1"], rel=1e-12)


def test_perfect_predictions():
    labels = np.array([0, 1, 2, 1, 0])
    probs = np.eye(3)[labels] * 0.9 + 0.1 / 3
    assert classification_metrics(probs, labels) == {"accuracy": 1.0, "macro_f1": 1.0, "map": 1.0}
