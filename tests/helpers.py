"""Helpers shared by tests (importable as `tests.helpers`)."""

from __future__ import annotations

# A fast variant of the default preset: two 1-epoch stages, tiny branches.
TINY_SETS = [
    "stages.epochs=[1,1]",
    "modalities.fou.encoder.hidden=[16]",
    "modalities.fou.encoder.dim=8",
    "modalities.kar.encoder.hidden=[16]",
    "modalities.kar.encoder.dim=8",
    "head.widths=[16,8]",
]


def set_args(sets: list[str]) -> list[str]:
    """CLI arguments for a list of --set overrides."""
    return [arg for item in sets for arg in ("--set", item)]
