"""Shared fixtures: offline, CPU, each test in its own working directory, a tiny preset."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers import TINY_SETS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _workdir(tmp_path, monkeypatch):
    """Every test runs in a fresh directory so runs/ and data/ never leak between tests."""
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def tiny_sets() -> list[str]:
    """--set overrides that make the default preset train in about a second."""
    return list(TINY_SETS)
