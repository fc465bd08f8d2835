"""The gradient-change cosine histogram (paper Figure 1): bins, wiring into IGM and MLA, resume.

Cosines are recomputed here in numpy from the gradients the projection saw (a spy on
project_grad_), never read back from the histogram under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import igm_cli.engine.flat_projector as flat_projector
from igm_cli.engine.grad_cosine import COSINE_EDGES, METER_PREFIX, GradCosine
from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from igm_cli.runs import read_jsonl
from tests.helpers import TINY_SETS

K = len(COSINE_EDGES) - 1
FAST = [*TINY_SETS, "data.batch_size=48"]  # 25 steps an epoch
EDGES = np.array(COSINE_EDGES)


def reference_bins(cosines: np.ndarray) -> np.ndarray:
    """Counts of cosines in [e_i, e_i+1), the last bin closed at 1 (numpy, not torch)."""
    index = np.clip(np.searchsorted(EDGES, cosines, side="right") - 1, 0, K - 1)
    return np.bincount(index, minlength=K)


def cos_np(a: torch.Tensor, b: torch.Tensor) -> float:
    x, y = a.double().numpy().ravel(), b.double().numpy().ravel()
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def stage_records(run_dir: str | Path) -> list[dict]:
    return [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if r["kind"] == "stage"]


def test_edges_are_ascending_from_minus_one_to_one_finer_towards_one():
    assert COSINE_EDGES[0] == -1.0 and COSINE_EDGES[-1] == 1.0 and COSINE_EDGES[1] == 0.0
    widths = np.diff(EDGES)
    assert (widths > 0).all() and (np.diff(widths[1:-1]) < 0).all()  # the last: [1 - 1e-6, 1]
    assert COSINE_EDGES[-2] == pytest.approx(1 - 1e-6)


def test_observe_bins_like_numpy_and_counts_zero_gradients_as_unchanged():
    torch.manual_seed(0)
    hist = GradCosine()
    hist.begin_stage(["a.head.0", "a.head.2"], "cpu")
    expected = {"a.head.0": [], "a.head.2": []}
    for step in range(60):
        g0, g2 = torch.randn(5, 7), torch.randn(3, 5)
        scale = torch.linspace(0.05, 1, 7) ** (step % 4)  # from unchanged to strongly damped
        after = [g0 * scale, -g2 if step % 5 == 0 else g2 + 0.3 * torch.randn(3, 5)]
        hist.observe(list(expected), [g0, g2], after)
        expected["a.head.0"].append(cos_np(g0, after[0]))
        expected["a.head.2"].append(cos_np(g2, after[1]))
    hist.observe(["a.head.0", "a.head.2"], [torch.zeros(5, 7), None], [torch.zeros(5, 7), None])
    expected["a.head.0"].append(1.0)  # a zero gradient: nothing changed
    hist.observe(["a.head.0"], [torch.ones(5, 7)], [torch.full((5, 7), float("nan"))])  # not counted
    got = hist.stage_histogram()
    assert got["edges"] == COSINE_EDGES
    for key, cosines in expected.items():
        assert got["counts"][key] == reference_bins(np.array(cosines)).tolist()
    assert sum(got["counts"]["a.head.2"][:1]) == 12  # cos = -1 lands in the first bin


def test_meter_state_round_trip_continues_the_counts():
    hist = GradCosine()
    hist.begin_stage(["m.head.0"], "cpu")
    g = torch.randn(4, 4)
    hist.observe(["m.head.0"], [g], [g * torch.tensor([1.0, 0.5, 0.2, 1.0])])
    meter = hist.meter_state()
    assert list(meter) == [METER_PREFIX + "m.head.0"] and sum(meter[METER_PREFIX + "m.head.0"]) == 1
    again = GradCosine()
    again.begin_stage(["m.head.0"], "cpu", {**meter, "head.0": [1.0, 2.0]})
    again.observe(["m.head.0"], [g], [g])
    assert sum(again.stage_histogram()["counts"]["m.head.0"]) == 2


def test_gm_off_histogram_is_all_at_one():
    results = train(resolve_preset("mfeat", [*FAST, "gm.enabled=false"]), runs_dir=Path("runs"))
    stages = stage_records(results["run_dir"])
    assert len(stages) == 2
    for record in stages:
        counts = record["grad_cos_hist"]["counts"]
        (m,) = record["active"]
        assert sorted(counts) == [f"{m}.head.0", f"{m}.head.2", f"{m}.head.3"]  # T would act on all three
        assert all(row == [0] * (K - 1) + [25] for row in counts.values())  # 25 steps, every one at 1


def test_gm_on_histogram_matches_the_projected_gradients(monkeypatch):
    seen: list[float] = []
    real = flat_projector.project_grad_

    def spy(weight, T):
        g = weight.grad.detach().clone()
        real(weight, T)
        seen.append(cos_np(g, weight.grad))

    monkeypatch.setattr(flat_projector, "project_grad_", spy)
    results = train(resolve_preset("mfeat", FAST), runs_dir=Path("runs"))
    first, second = stage_records(results["run_dir"])
    # stage 0 trains fou before kar has a T: T = I, all at 1; stage 1: kar's head under fou's T
    assert all(row[-1] == 25 for row in first["grad_cos_hist"]["counts"].values())
    counts = second["grad_cos_hist"]["counts"]
    assert sorted(counts) == ["kar.head.0", "kar.head.2", "kar.head.3"]
    assert all(sum(row) == 25 for row in counts.values())  # steps × paired layers
    assert len(seen) == 25 * 3
    # project_grad_ runs per step in forward order of the paired layers
    by_layer = [np.array(seen[i::3]) for i in range(3)]
    for key, cosines in zip(["kar.head.0", "kar.head.2", "kar.head.3"], by_layer, strict=True):
        assert counts[key] == reference_bins(cosines).tolist()
        assert counts[key][-1] < 25 and cosines.min() >= 2 * np.exp(0.2) / (1 + np.exp(0.4)) - 1e-9
    assert results["stages"][1]["grad_cos_hist"] == second["grad_cos_hist"]  # results.json has it too


def interrupt_at(stage: int, epoch: int, batch: int):
    def on_event(kind, payload):
        if kind == "step" and (payload["stage"], payload["epoch"], payload["batch"]) == (stage, epoch, batch):
            raise KeyboardInterrupt

    return on_event


def test_resume_mid_stage_continues_the_histogram_exactly(tmp_path):
    sets = [*FAST, "stages.epochs=[1,2]"]
    whole = train(resolve_preset("mfeat", sets), runs_dir=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):  # inside the second epoch of the GM stage
        train(resolve_preset("mfeat", sets), runs_dir=tmp_path / "cut", on_event=interrupt_at(1, 1, 10))
    (cut,) = (tmp_path / "cut").iterdir()
    resumed = train(None, resume=str(cut), runs_dir=tmp_path / "cut")
    a, b = stage_records(whole["run_dir"]), stage_records(resumed["run_dir"])
    assert [r["grad_cos_hist"] for r in a] == [r["grad_cos_hist"] for r in b]
    assert all(sum(row) == 50 for row in a[1]["grad_cos_hist"]["counts"].values())


def test_mla_histogram_of_the_shared_head_per_modality():
    sets = [*FAST, "method=mla", "baseline.epochs=1"]
    results = train(resolve_preset("mfeat", sets), runs_dir=Path("runs"))
    (record,) = stage_records(results["run_dir"])
    counts = record["grad_cos_hist"]["counts"]
    assert sorted(counts) == ["fou.head", "kar.head"]
    assert all(sum(row) == 25 for row in counts.values())  # one step per modality and batch
    # P₀ = I: fou's first step is unchanged; afterwards P removes directions of both modalities
    assert counts["fou.head"][-1] >= 1 and sum(counts["fou.head"][:-1]) >= 20
    json.dumps(results)  # the record stays JSON
