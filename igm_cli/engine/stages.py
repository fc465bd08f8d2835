"""StageSchedule: which branches train when (Algorithm 1) and whose T acts on them.

Each method builds its own schedule (igm_cli/methods); igm: stage s trains
modalities[s mod m] and T comes from the previous modality in the cycle,
k = mod(j + m − 2, m) + 1 (1-based), i.e. modalities[(s − 1) mod m]; the other methods
train in one stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from igm_cli.presets import Preset


@dataclass(frozen=True)
class Stage:
    """One stage: its index, the branches it trains, epochs, and the T source (or None)."""

    index: int
    active: tuple[str, ...]
    epochs: int
    source: str | None


def previous_modality(modalities: list[str], j: int) -> str:
    """The paper's k = mod(j + m − 2, m) + 1 for 1-based j, returned by name."""
    m = len(modalities)
    k = (j + m - 2) % m + 1
    return modalities[k - 1]


class StageSchedule:
    """The ordered stages of one run."""

    def __init__(self, stages: list[Stage]):
        self.stages = stages

    @classmethod
    def from_preset(cls, preset: Preset) -> StageSchedule:
        """The schedule of the preset's method (each method module defines its own)."""
        from igm_cli.methods import get_method

        return get_method(preset).schedule()

    def __len__(self) -> int:
        return len(self.stages)

    def __getitem__(self, index: int) -> Stage:
        return self.stages[index]

    def __iter__(self):
        return iter(self.stages)

    @property
    def total_epochs(self) -> int:
        """Epochs over all stages."""
        return sum(s.epochs for s in self.stages)


def igm_epochs_per_modality(preset: Preset) -> dict[str, int]:
    """How many epochs IGM's stages give each modality (the baselines' default budget)."""
    names = preset.modality_names
    totals = dict.fromkeys(names, 0)
    for s, epochs in enumerate(preset.stages.epochs):
        totals[names[s % len(names)]] += epochs
    return totals


def unimodal_modality(preset: Preset) -> str:
    """The branch a unimodal run trains."""
    return preset.baseline.modality or preset.modality_names[0]
