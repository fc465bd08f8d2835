"""`igm landscape`: surfaces of several checkpoints on identical seeded directions, side by side.

Every checkpoint is rebuilt from its file alone (as `igm eval` does) and evaluated on the
same fixed, seeded subset of one split; directions are drawn per parameter name and shape
(Li et al. 2018), so surfaces of one architecture are directly comparable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from igm_cli.checkpoint import Checkpoint, load_checkpoint
from igm_cli.data.manifest import sha256_file
from igm_cli.engine.batches import SplitBatches
from igm_cli.errors import UsageError
from igm_cli.methods import get_method
from igm_cli.models import LateFusionModel
from igm_cli.pipeline import build_for, load_weights, open_data, resolve_device
from igm_cli.presets import Preset, preset_from_json
from igm_cli.runs import write_text_atomic
from igm_cli.threads import use_threads

from .directions import cosine, make_directions
from .objective import FUSED, Batch, SubsetObjective, fixed_batches, scope_parameters, subset_indices
from .plots import plot_landscape
from .sharpness import flattest, rise_within, sharpness_radius, top_hessian_eigenvalue
from .store import LandscapeStore
from .surface import Perturbation, evaluate_grid, grid_axes

Event = Callable[[str, dict[str, Any]], None]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LandscapeSpec:
    """What to plot; the defaults are the CLI's."""

    split: str = "train"
    modality: str = FUSED
    grid: int = 25
    span: float = 1.0
    dims: int = 2
    batches: int = 8
    seed: int = 0

    def check(self) -> None:
        """Reject impossible settings with a usage error naming the option."""
        problems = [
            (self.split not in SPLITS, f"--split must be one of {', '.join(SPLITS)} (got {self.split!r})"),
            (self.dims not in (1, 2), f"--dims must be 1 or 2 (got {self.dims})"),
            (not 3 <= self.grid <= 201, f"--grid must be between 3 and 201 (got {self.grid})"),
            (not self.span > 0, f"--span must be positive (got {self.span})"),
            (self.batches < 0, f"--batches must be ≥ 0, 0 meaning the whole split (got {self.batches})"),
        ]
        for bad, message in problems:
            if bad:
                raise UsageError(message)


@dataclass
class Loaded:
    """One checkpoint rebuilt: its display name, file, preset and model."""

    name: str
    checkpoint: Checkpoint
    preset: Preset
    model: LateFusionModel


def load_model(path: Path | str, device: torch.device) -> Loaded:
    """Rebuild the model of a checkpoint from the file alone."""
    checkpoint = load_checkpoint(path)
    preset = preset_from_json(checkpoint.preset, str(checkpoint.path))
    model = build_for(preset, checkpoint.model_info, device, pretrained=False)
    load_weights(model, checkpoint.group("model"), checkpoint.path)
    name = f"{checkpoint.path.resolve().parent.name}/{checkpoint.path.stem}"
    return Loaded(name, checkpoint, preset, model)


def method_label(preset: Preset) -> str:
    """`joint`, `unimodal`, or `igm` with its ablation switches (`igm, ρ=0, no GM`)."""
    if preset.method != "igm":
        return preset.method
    return ", ".join(["igm", f"ρ={preset.sam.rho:g}", *([] if preset.gm.enabled else ["no GM"])])


def check_comparable(loaded: list[Loaded], modality: str) -> None:
    """Same branch present, same classes, same parameter names and shapes in the scope."""
    for item in loaded:
        if modality != FUSED and modality not in item.model.modalities:
            raise UsageError(
                f"--modality {modality}: not a branch of {item.checkpoint.path} "
                f"(choose {', '.join(item.model.modalities)} or fused)"
            )
    first = loaded[0]
    reference = {n: tuple(p.shape) for n, p in scope_parameters(first.model, modality)}
    for item in loaded[1:]:
        shapes = {n: tuple(p.shape) for n, p in scope_parameters(item.model, modality)}
        if item.checkpoint.model_info["classes"] != first.checkpoint.model_info["classes"]:
            raise UsageError(f"{item.checkpoint.path} and {first.checkpoint.path} predict different classes")
        if shapes != reference:
            odd = sorted(set(shapes) ^ set(reference)) or [n for n in reference if shapes[n] != reference[n]]
            raise UsageError(
                f"{item.checkpoint.path} and {first.checkpoint.path} have different architectures "
                f"(first difference: {odd[0]}); a landscape compares checkpoints of one architecture"
            )


def subset_batches(first: Loaded, spec: LandscapeSpec, data_dir: Path | None, device) -> list[Batch]:
    """The fixed, seeded subset of the split, read once, from the first checkpoint's data."""
    stored = first.checkpoint.model_info.get("data_dir")
    stored = Path(stored) if stored and Path(stored).exists() else None
    data = open_data(first.preset, data_dir or stored)
    if data.manifest.classes != first.checkpoint.model_info["classes"]:
        raise UsageError(f"the data's classes differ from those of {first.checkpoint.path}")
    modalities = first.model.modalities if spec.modality == FUSED else [spec.modality]
    split = SplitBatches(data.split(spec.split), modalities, device)
    size = first.preset.data.eval_batch_size
    return fixed_batches(split, subset_indices(len(split), spec.batches, size, spec.seed), size)


def default_out(loaded: list[Loaded], modality: str, config: dict[str, Any]) -> Path:
    """`landscape-<run>-<checkpoint>-<modality>` in the working directory, never colliding.

    A directory holding this very landscape is reused (the same command resumes); one
    holding another landscape (other settings or checkpoints) gets the next `-2`, `-3`.
    """
    first = loaded[0]
    stems = "+".join(dict.fromkeys(x.checkpoint.path.stem for x in loaded))
    stem = f"landscape-{first.checkpoint.path.resolve().parent.name}-{stems}-{modality}"
    for n in range(1, 1000):
        out = Path(stem if n == 1 else f"{stem}-{n}")
        if not out.exists() or LandscapeStore.holds(out, config):
            return out
    raise UsageError(f"too many landscapes named {stem}*; pass --out")


def unique_names(loaded: list[Loaded]) -> None:
    """Suffix repeated display names (#2, #3, ...) so panels and JSON keys are unambiguous."""
    seen: dict[str, int] = {}
    for item in loaded:
        seen[item.name] = seen.get(item.name, 0) + 1
        if seen[item.name] > 1:
            item.name = f"{item.name}#{seen[item.name]}"


def prepare(
    paths: list[Path | str], spec: LandscapeSpec, data_dir: Path | None, device: str
) -> tuple[list[Loaded], list[Batch]]:
    """Check the settings, rebuild every checkpoint, check they compare, read the subset."""
    spec.check()
    if not paths:
        raise UsageError("give at least one checkpoint")
    torch_device = resolve_device(device)
    loaded = [load_model(p, torch_device) for p in paths]
    unique_names(loaded)
    check_comparable(loaded, spec.modality)
    return loaded, subset_batches(loaded[0], spec, data_dir, torch_device)


def compute_landscape(
    paths: list[Path | str],
    spec: LandscapeSpec,
    *,
    out: Path | None = None,
    data_dir: Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    on_event: Event | None = None,
) -> dict[str, Any]:
    """Surfaces, sharpness and plots of every checkpoint; returns landscape.json's content."""
    started = time.perf_counter()
    emit = on_event or (lambda *_: None)
    loaded, batches = prepare(paths, spec, data_dir, device)
    used_threads = use_threads(threads, max((x.model for x in loaded), key=_size))
    axes = [grid_axes(spec.grid, spec.span)] * spec.dims
    config = {
        **asdict(spec),
        "samples": sum(len(y) for _, y in batches),
        # the content hash: a stored landscape is continued only for the very same files
        "checkpoints": [{"name": x.name, "sha256": sha256_file(x.checkpoint.path)} for x in loaded],
    }
    out = Path(out) if out is not None else default_out(loaded, spec.modality, config)
    store = LandscapeStore.open(out, config, axes, len(loaded))
    resumed = sum(store.points_done(i) for i in range(len(loaded)))
    names, points, samples = [x.name for x in loaded], spec.grid**spec.dims, config["samples"]
    emit("start", {"out": str(out), "names": names, "points": points, "done": resumed, "samples": samples})
    try:
        rows = [checkpoint_landscape(i, x, batches, spec, axes, store, emit) for i, x in enumerate(loaded)]
    finally:
        store.save()
    result = summarise(rows, spec, axes, config, out, resumed)
    result["files"] = {"surfaces": str(out / "surfaces.safetensors"), "json": str(out / "landscape.json")}
    result["files"].update(plot_landscape(result, [store.surface(i) for i in range(len(rows))], out))
    result["threads"] = used_threads
    result["seconds"] = round(time.perf_counter() - started, 2)
    write_text_atomic(out / "landscape.json", json.dumps(result, indent=2))
    return result


def _size(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def checkpoint_landscape(
    i: int, item: Loaded, batches: list[Batch], spec: LandscapeSpec, axes, store: LandscapeStore, emit: Event
) -> dict[str, Any]:
    """Centre, grid (continuing a stored one) and top Hessian eigenvalue of one checkpoint."""
    objective = SubsetObjective(item.model, batches, spec.modality, get_method(item.preset).fusion)
    named = scope_parameters(item.model, spec.modality)
    params = [p for _, p in named]
    directions = make_directions(named, spec.seed, spec.dims)
    emit("checkpoint", {"index": i, "name": item.name, "done": store.points_done(i)})
    centre, hessian = store.arrays[f"centre.{i}"], store.arrays[f"hessian.{i}"]
    if np.isnan(centre[0]):
        centre[:] = objective.evaluate()

    def on_point() -> None:
        store.maybe_save()
        emit("point", {"index": i})

    evaluate_grid(objective, Perturbation(params, directions), axes, store.surface(i), on_point)
    if np.isnan(hessian[0]):
        emit("hessian", {"index": i, "name": item.name})
        h = top_hessian_eigenvalue(objective, params, seed=spec.seed)
        hessian[:] = (h["eigenvalue"], h["iterations"], h["converged"])
        store.save()
    loss = store.surface(i)["loss"]
    row = {
        "name": item.name,
        "checkpoint": str(item.checkpoint.path),
        "method": item.preset.method,
        "label": method_label(item.preset),
        "centre": {"loss": float(centre[0]), "accuracy": float(centre[1])},
        "min_loss": float(loss.min()),
        "max_loss": float(loss.max()),
        **rise_within(loss, axes, float(centre[0]), sharpness_radius(spec.span, spec.grid)),
        "hessian_top_eigenvalue": float(hessian[0]),
        "hessian": {"iterations": int(hessian[1]), "converged": bool(hessian[2])},
        "parameters_moved": sum(p.numel() for p in params),
        "direction_cosine": cosine(directions[0], directions[1]) if spec.dims == 2 else None,
    }
    emit("checkpoint_end", row)
    return row


def summarise(rows, spec: LandscapeSpec, axes, config, out: Path, resumed: int) -> dict[str, Any]:
    """landscape.json's content (without files and time)."""
    return {
        "modality": spec.modality,
        "split": spec.split,
        "samples": config["samples"],
        "seed": spec.seed,
        "grid": spec.grid,
        "span": spec.span,
        "dims": spec.dims,
        "batches": spec.batches,
        "axes": dict(zip(("alpha", "beta")[: len(axes)], ([float(v) for v in a] for a in axes), strict=True)),
        "directions": "Gaussian per parameter name and shape, filter-normalised (Li et al. 2018); "
        "biases and BatchNorm parameters not moved",
        "radius": sharpness_radius(spec.span, spec.grid),
        "radius_rule": "r = max(0.25 * span, one grid step); rise = loss - centre loss at grid points "
        "0 < |(alpha, beta)| <= r",
        "checkpoints": rows,
        "flattest": flattest(rows),
        "out": str(out),
        "resumed_points": resumed,
    }
