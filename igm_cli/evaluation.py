"""`igm eval`: rebuild a model from a checkpoint alone, score one split, measure the imbalance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .analysis.imbalance import imbalance_measures
from .analysis.outputs import Fuser, SplitOutputs, collect
from .checkpoint import Checkpoint, load_checkpoint
from .data.prepared import PreparedDataset
from .engine.batches import SplitBatches
from .engine.evaluate import score
from .errors import DataError
from .methods import get_method
from .pipeline import build_for, load_weights, open_data, resolve_device, trained_modalities
from .preset_schema import Preset
from .presets import preset_from_json
from .threads import use_threads


@dataclass
class Opened:
    """A checkpoint rebuilt beside its data: what an evaluation and the analyses share."""

    checkpoint: Checkpoint
    preset: Preset
    data: PreparedDataset
    model: torch.nn.Module
    batches: SplitBatches
    split: str
    fusion: str
    batch_size: int  # the method's evaluation batch (entropy_batch fusion weighs per batch)
    threads: int | None


@dataclass
class Evaluated:
    """The result document and the stored outputs it was computed from."""

    result: dict[str, Any]
    outputs: SplitOutputs
    fuser: Fuser


def open_checkpoint(
    path: Path | str,
    *,
    split: str = "test",
    fusion: str | None = None,
    data_dir: Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> Opened:
    """Load a checkpoint, its data (the stored directory unless `data_dir`) and the split's batches."""
    checkpoint = load_checkpoint(path)
    preset = preset_from_json(checkpoint.preset, str(checkpoint.path))
    info = checkpoint.model_info
    stored = Path(info["data_dir"]) if info.get("data_dir") else None
    data = open_data(preset, data_dir or (stored if stored and stored.exists() else None))
    _check_same_classes(data, info["classes"])
    torch_device = resolve_device(device)
    model = build_for(preset, info, torch_device, pretrained=False)
    used_threads = use_threads(threads, model)
    load_weights(model, checkpoint.group("model"), checkpoint.path)
    batches = SplitBatches(data.split(split), trained_modalities(preset), torch_device)
    method = get_method(preset)
    fusion = fusion or method.fusion
    batch = method.eval_batch_size
    return Opened(checkpoint, preset, data, model, batches, split, fusion, batch, used_threads)


def evaluate_opened(opened: Opened, seed: int = 0) -> Evaluated:
    """Metrics of every branch and the fused model, and the imbalance measures, from one pass."""
    batch = opened.batch_size
    outputs = collect(opened.model, opened.batches, batch)
    metrics = score(outputs.logits, outputs.labels, opened.fusion, batch)
    fuser = Fuser(opened.model, outputs, opened.fusion, batch, seed)
    checkpoint = opened.checkpoint
    result = {
        "checkpoint": str(checkpoint.path),
        "preset": opened.preset.name,
        "method": opened.preset.method,
        "split": opened.split,
        "fusion": opened.fusion,
        "samples": len(opened.batches),
        "state": {k: checkpoint.state.get(k) for k in ("stage", "epochs_done", "step", "best_metric")},
        "metrics": metrics,
        "imbalance": imbalance_measures(fuser, metrics, checkpoint.model_info["classes"], seed),
        "threads": opened.threads,
    }
    return Evaluated(result, outputs, fuser)


def evaluate_checkpoint(
    path: Path | str,
    *,
    split: str = "test",
    fusion: str | None = None,
    data_dir: Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Metrics of every branch and the fused model of a checkpoint on one split, with imbalance measures."""
    opened = open_checkpoint(
        path, split=split, fusion=fusion, data_dir=data_dir, device=device, threads=threads
    )
    return evaluate_opened(opened).result


def _check_same_classes(data: PreparedDataset, classes: list[str]) -> None:
    if data.manifest.classes != classes:
        raise DataError(f"the data's classes {data.manifest.classes} differ from the checkpoint's {classes}")
