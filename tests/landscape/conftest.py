"""Tiny trained checkpoints shared by the landscape tests (trained once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from tests.helpers import TINY_SETS


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """best.safetensors of: IGM (seed 42), IGM (seed 7, same architecture), unimodal kar."""
    root = tmp_path_factory.mktemp("landscape-runs")
    variants = {
        "a": resolve_preset("mfeat", TINY_SETS),
        "b": resolve_preset("mfeat", TINY_SETS, seed=7),
        "kar_only": resolve_preset("mfeat", [*TINY_SETS, "method=unimodal", "baseline.modality=kar"]),
    }
    return {
        name: Path(train(preset, runs_dir=root / name)["run_dir"]) / "best.safetensors"
        for name, preset in variants.items()
    }
