"""Self-describing safetensors checkpoints (DESIGN §3); no pickle anywhere.

Tensors: `model.<state-dict key>`, `gm.T.<modality>.<layer>`, `gm.cov.<modality>.<layer>`,
and in `last.safetensors` also `optim.<param>.<state>` and `rng.*`. Metadata (JSON
strings): the resolved preset, the model's input description, the training state,
library versions and the optimizer's non-tensor state.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from .durable import write_atomic
from .errors import CheckpointError

FORMAT = "igm-checkpoint/1"


MAX_HEADER_BYTES = 16 << 20  # a checkpoint's JSON header is a few KB; a length field claiming GB is refused
DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
"""safetensors dtypes igm writes or could meet, with their item size in bytes."""


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as the header describes it, before any data is read."""

    dtype: str  # safetensors name: F32, I64, U8, ...
    shape: tuple[int, ...]


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


def load_checkpoint(path: Path | str, *, resume: bool = False) -> Checkpoint:
    """Load and validate; any problem is a CheckpointError naming the file (exit 3).

    The header is bounded and checked, and the model its metadata describes is sized and
    compared with the file's tensors (names, shapes, dtypes) before any tensor is read
    or any model is built; `resume` also requires what `--resume` restores (optimizer
    and RNG state, the T of every finished stage).
    """
    from .checkpoint_checks import verify_checkpoint

    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    specs, metadata = read_header(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"not an igm checkpoint: {path} (format {str(metadata.get('format'))[:40]!r})")
    decoded = {}
    for key in ("preset", "model", "state", "extra"):
        try:
            decoded[key] = json.loads(metadata[key])
        except (KeyError, TypeError, json.JSONDecodeError, RecursionError) as e:
            raise CheckpointError(f"corrupt checkpoint metadata in {path}: {key}: {_first(e)}") from None
        if not isinstance(decoded[key], dict):
            raise CheckpointError(f"corrupt checkpoint metadata in {path}: {key} is not a mapping")
    checkpoint = Checkpoint(path, {}, decoded["preset"], decoded["model"], decoded["state"], decoded["extra"])
    verify_checkpoint(checkpoint, specs, resume=resume)
    checkpoint.tensors = read_tensors(path)
    check_finite(checkpoint)
    return checkpoint


def read_header(path: Path) -> tuple[dict[str, TensorSpec], dict[str, str]]:
    """The tensors and metadata a safetensors header declares, checked against the file size."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else 0
            if len(head) < 8 or not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
                raise CheckpointError(_not_safetensors(path, head, length, size))
            raw = f.read(length)
    except PermissionError:
        raise CheckpointError(f"cannot read checkpoint {path}: permission denied") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(
            f"not a checkpoint: {path} is not a safetensors file (no JSON header)"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"corrupt checkpoint {path}: the header is not a mapping")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"corrupt checkpoint {path}: metadata values must be strings")
    return _tensor_specs(path, header, size - 8 - length), metadata


def _tensor_specs(path: Path, header: dict[str, Any], data_bytes: int) -> dict[str, TensorSpec]:
    """Every entry: a known dtype, a shape, and offsets that tile the data exactly once."""
    specs, spans = {}, []
    for key, entry in header.items():
        ok = isinstance(entry, dict) and entry.get("dtype") in DTYPES
        shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if ok else (None, None)
        ok = ok and isinstance(shape, list) and len(shape) <= 8 and _ints(shape)
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and _ints(offsets)
        if not ok:
            raise CheckpointError(f"corrupt checkpoint {path}: bad header entry for tensor {key[:80]!r}")
        begin, end = offsets
        if end - begin != math.prod(shape) * DTYPES[entry["dtype"]] or not 0 <= begin <= end <= data_bytes:
            raise CheckpointError(f"corrupt checkpoint {path}: tensor {key[:80]!r} does not fit its data")
        specs[key] = TensorSpec(entry["dtype"], tuple(shape))
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise CheckpointError(f"corrupt checkpoint {path}: tensor data overlap or leave gaps")
        position = end
    if position != data_bytes:
        raise CheckpointError(f"corrupt checkpoint {path}: {data_bytes - position} bytes beyond the tensors")
    return specs


def _ints(values: list[Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


def _not_safetensors(path: Path, head: bytes, length: int, size: int) -> str:
    """Say what the file is when it is not a safetensors file (a YAML file, a pickle, noise)."""
    if head[:1] == b"\x80" or head[:2] in (b"PK", b"\x1f\x8b"):
        what = "it looks like a pickle or an archive, which igm never unpickles"
    elif head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        what = "it is a text file"
    elif size < 8:
        what = f"{size} bytes, too short"
    else:
        what = f"its header length field says {length} bytes of {size}"
    return f"not a checkpoint: {path} is not a safetensors file ({what})"


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a file whose header was already checked."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # safetensors raises several types for truncated/garbled files
        raise CheckpointError(f"corrupt checkpoint {path}: {_first(e)}") from None


def check_finite(checkpoint: Checkpoint) -> None:
    """Refuse NaN or ±inf in any floating tensor: such weights would only yield NaN metrics."""
    for key, tensor in checkpoint.tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"checkpoint {checkpoint.path}: tensor {key} holds non-finite values")


def _first(e: Exception) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


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
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    *,
    allow_empty: bool = True,
    source: Path | str = "checkpoint",
) -> None:
    """Inverse of `optimizer_tensors` (other keys in `tensors` are ignored).

    The stored state must be what this optimizer keeps: every parameter with every buffer
    (right shape and dtype), or, when `allow_empty` (no step taken in the stage yet), none.
    """
    from .checkpoint_checks import check_optimizer_state

    state = check_optimizer_state(optimizer, tensors, meta, allow_empty=allow_empty, source=source)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{source}: optimizer state does not fit: {_first(e)}") from None


def rng_tensors() -> dict[str, torch.Tensor]:
    """The torch RNG states that training consumes (dropout, and CUDA's if present)."""
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of `rng_tensors` (shapes and dtypes are checked when the file is loaded)."""
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
