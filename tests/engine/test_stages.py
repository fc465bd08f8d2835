"""StageSchedule (Algorithm 1): alternating igm stages, T sources, and the baselines' single stage."""

from __future__ import annotations

import pytest

from igm_cli.engine.stages import (
    Stage,
    StageSchedule,
    igm_epochs_per_modality,
    previous_modality,
    unimodal_modality,
)
from igm_cli.presets import Preset


def make_preset(names, method="igm", epochs=None, baseline=None) -> Preset:
    raw = {
        "method": method,
        "modalities": [{"name": n, "encoder": {"name": "mlp", "hidden": [8], "dim": 6}} for n in names],
        "head": {"widths": [5, 4]},
    }
    if epochs is not None:
        raw["stages"] = {"epochs": list(epochs)}
    if baseline is not None:
        raw["baseline"] = baseline
    return Preset.model_validate(raw)


def as_tuples(schedule: StageSchedule) -> list[tuple]:
    return [(s.index, s.active, s.epochs, s.source) for s in schedule]


def test_igm_two_modalities_alternate_and_take_T_from_the_other():
    schedule = StageSchedule.from_preset(make_preset(["a", "b"], epochs=[3, 2, 4]))
    assert as_tuples(schedule) == [
        (0, ("a",), 3, "b"),
        (1, ("b",), 2, "a"),
        (2, ("a",), 4, "b"),
    ]
    assert len(schedule) == 3
    assert schedule.total_epochs == 9
    assert schedule[1] == Stage(1, ("b",), 2, "a")
    assert list(schedule) == schedule.stages


def test_igm_three_modalities_cycle():
    schedule = StageSchedule.from_preset(make_preset(["x", "y", "z"], epochs=[1, 2, 3, 4, 5, 6, 7]))
    assert as_tuples(schedule) == [
        (0, ("x",), 1, "z"),
        (1, ("y",), 2, "x"),
        (2, ("z",), 3, "y"),
        (3, ("x",), 4, "z"),
        (4, ("y",), 5, "x"),
        (5, ("z",), 6, "y"),
        (6, ("x",), 7, "z"),
    ]
    assert schedule.total_epochs == 28


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_previous_modality_is_the_papers_formula(m):
    # k = mod(j + m − 2, m) + 1 (1-based): the modality before j in the cycle, m before 1.
    names = [f"m{i}" for i in range(1, m + 1)]
    for j in range(1, m + 1):
        k = m if j == 1 else j - 1
        assert previous_modality(names, j) == names[k - 1]


@pytest.mark.parametrize(
    ("names", "epochs"),
    [(["a", "b"], [3, 2, 4]), (["a", "b", "c"], [3, 1, 2, 5]), (["a", "b", "c"], [1, 1])],
)
def test_igm_epochs_per_modality(names, epochs):
    expected = {n: sum(e for s, e in enumerate(epochs) if names[s % len(names)] == n) for n in names}
    assert igm_epochs_per_modality(make_preset(names, epochs=epochs)) == expected


def test_joint_is_one_stage_of_all_branches_with_the_igm_budget_of_one_modality():
    # igm would give a 3 + 4 = 7 epochs and b 2 → the baseline trains 7 epochs
    schedule = StageSchedule.from_preset(make_preset(["a", "b"], method="joint", epochs=[3, 2, 4]))
    assert as_tuples(schedule) == [(0, ("a", "b"), 7, None)]
    assert schedule.total_epochs == 7


def test_joint_three_modalities_with_explicit_epochs():
    preset = make_preset(["a", "b", "c"], method="joint", epochs=[3, 2, 4], baseline={"epochs": 11})
    assert as_tuples(StageSchedule.from_preset(preset)) == [(0, ("a", "b", "c"), 11, None)]


def test_unimodal_defaults_to_the_first_modality():
    preset = make_preset(["a", "b", "c"], method="unimodal", epochs=[1, 5, 2, 1])
    assert unimodal_modality(preset) == "a"
    # per modality: a 1 + 1 = 2, b 5, c 2 → 5 epochs
    assert as_tuples(StageSchedule.from_preset(preset)) == [(0, ("a",), 5, None)]


def test_unimodal_chosen_modality_and_epochs():
    preset = make_preset(["a", "b"], method="unimodal", baseline={"modality": "b", "epochs": 3})
    schedule = StageSchedule.from_preset(preset)
    assert as_tuples(schedule) == [(0, ("b",), 3, None)]
    assert schedule.total_epochs == 3


def test_unimodal_single_modality_preset():
    preset = make_preset(["solo"], method="unimodal", epochs=[2, 3])
    assert as_tuples(StageSchedule.from_preset(preset)) == [(0, ("solo",), 5, None)]
