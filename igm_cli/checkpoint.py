"""Self-describing safetensors checkpoints (DESIGN §3); no pickle anywhere.

Tensors: `model.<state-dict key>`, `gm.T.<modality>.<layer>`, `gm.cov.<modality>.<layer>`,
and in `last.safetensors` also `optim.<param>.<state>` and `rng.*`. Metadata (JSON
strings): the resolved preset, the model's input description, the training state,
library versions and the optimizer's non-tensor state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from .durable import write_atomic
from .errors import CheckpointError

FORMAT = "igm-checkpoint/1"


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors by key and decoded metadata."""

    path: Path
    tensors: dict[str, torch.Tensor]
    preset: dict[str, Any]
    model_info: dict[str, Any]
    state: dict[str, Any]
    extra: dict[str, Any]

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under `prefix.` with the prefix removed."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}


def save_checkpoint(
    path: Path,
    tensors: dict[str, torch.Tensor],
    *,
    preset: dict[str, Any],
    model_info: dict[str, Any],
    state: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write atomically and durably (durable.write_atomic): never half a checkpoint on disk.

    Serialised in memory first, so a full disk is an OSError naming `path`, not an error
    from inside the safetensors writer.
    """
    from .data.manifest import library_versions

    metadata = {
        "format": FORMAT,
        "preset": json.dumps(preset),
        "model": json.dumps(model_info),
        "state": json.dumps(state),
        "extra": json.dumps(extra or {}),
        "versions": json.dumps(library_versions()),
    }
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    write_atomic(Path(path), data)


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Load and validate; any problem is a CheckpointError naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # safetensors raises several types for truncated/garbled files
        raise CheckpointError(
            f"corrupt checkpoint {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"not an igm checkpoint: {path} (format {metadata.get('format')!r})")
    try:
        decoded = {k: json.loads(metadata[k]) for k in ("preset", "model", "state", "extra")}
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"corrupt checkpoint metadata in {path}: {e}") from None
    return Checkpoint(path, tensors, decoded["preset"], decoded["model"], decoded["state"], decoded["extra"])


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimizer's state into tensors (`optim.<i>.<name>`) and JSON-able rest."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Inverse of `optimizer_tensors` (other keys in `tensors` are ignored)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("optim."):
            continue
        index, name = key[len("optim.") :].split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_tensors() -> dict[str, torch.Tensor]:
    """The torch RNG states that training consumes (dropout, and CUDA's if present)."""
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of `rng_tensors`."""
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
