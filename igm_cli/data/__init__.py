"""Dataset registry: name → module exposing NAME, MODALITIES and prepare() (STYLE §12)."""

from __future__ import annotations

from types import ModuleType

from ..errors import UsageError
from . import crema_d, embedded, kinetics_sounds, nvgesture, sarcasm, twitter2015

DATASETS: dict[str, ModuleType] = {
    m.NAME: m for m in (embedded, crema_d, kinetics_sounds, nvgesture, twitter2015, sarcasm)
}


def get_dataset(name: str) -> ModuleType:
    """The dataset module registered under `name`."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]
