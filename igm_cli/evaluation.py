"""`igm eval`: rebuild a model from a checkpoint alone and score one split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checkpoint import load_checkpoint
from .data.prepared import PreparedDataset
from .engine.batches import SplitBatches
from .engine.evaluate import evaluate_model
from .errors import DataError
from .methods import get_method
from .pipeline import build_for, load_weights, open_data, resolve_device, trained_modalities
from .presets import preset_from_json
from .threads import use_threads


def evaluate_checkpoint(
    path: Path | str,
    *,
    split: str = "test",
    fusion: str | None = None,
    data_dir: Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Metrics of every branch and the fused model of a checkpoint on one split."""
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
    metrics = evaluate_model(model, batches, method.eval_batch_size, fusion)
    return {
        "checkpoint": str(checkpoint.path),
        "preset": preset.name,
        "method": preset.method,
        "split": split,
        "fusion": fusion,
        "samples": len(batches),
        "state": {k: checkpoint.state.get(k) for k in ("stage", "epochs_done", "step", "best_metric")},
        "metrics": metrics,
        "threads": used_threads,
    }


def _check_same_classes(data: PreparedDataset, classes: list[str]) -> None:
    if data.manifest.classes != classes:
        raise DataError(f"the data's classes {data.manifest.classes} differ from the checkpoint's {classes}")
