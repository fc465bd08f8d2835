"""The public I3D weights: `igm convert i3d` (a plain .pt state dict → safetensors, once) and loading them.

The .pt files are read with `torch.load(weights_only=True)`, which refuses any pickle
that would construct objects or call functions, so a stranger's file cannot run code;
training then reads only the safetensors copy. A 1-channel branch (depth) takes every
tensor but the first convolution's, which stays freshly initialised (the release does the
same by renaming that layer).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import CheckpointError

FORMAT = "igm-i3d/1"
FIRST_CONV = "Conv3d_1a_7x7.conv3d.weight"
REQUIRED = (FIRST_CONV, "Mixed_5c.b3b.conv3d.weight")  # a file without these is not an I3D state dict
UNUSED_PREFIXES = ("logits.",)  # the Kinetics classifier; our feature stops at Mixed_5c
OPTIONAL_SUFFIXES = ("num_batches_tracked",)  # the 2018 files predate this BatchNorm buffer


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain {name: tensor} state dict from a .pt file, never unpickling anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for forbidden globals; others for damaged files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} is not a plain state dict (refused without running it): {first[:200]}"
        ) from None
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise CheckpointError(f"{path} does not hold a {{name: tensor}} state dict")
    state = {k.removeprefix("module."): v for k, v in loaded.items()}  # DataParallel copies
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not an I3D state dict in the pytorch-i3d layout (no {missing[0]})")
    return state


def convert_i3d(source: Path, out: Path) -> dict[str, Any]:
    """Write `source`'s tensors to `out` (safetensors, atomically) and describe what was written."""
    state = read_state_dict(source)
    in_channels = int(state[FIRST_CONV].shape[1])
    metadata = {"format": FORMAT, "in_channels": str(in_channels), "source": Path(source).name}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, out)
    params = sum(v.numel() for k, v in state.items() if not k.endswith(OPTIONAL_SUFFIXES))
    return {
        "source": str(source),
        "out": str(out),
        "tensors": len(state),
        "parameters": params,
        "in_channels": in_channels,
        "message": f"wrote {out}: {len(state)} tensors, {params:,} values, {in_channels} input channels",
    }


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a converted weights file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"encoder weights {path} do not exist (convert the public .pt with `igm convert i3d`, "
            "or set encoder.weights to null for a random initialisation)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iteration)
    except Exception as e:  # safetensors raises several types for truncated/garbled files
        raise CheckpointError(f"{path} is not a safetensors file: {str(e).splitlines()[0]}") from None


def load_i3d_weights(model: nn.Module, path: Path) -> list[str]:
    """Load converted weights into an I3D; returns the keys left at their initialisation.

    The first convolution is skipped when the file was trained on another number of input
    channels (depth from the RGB weights); every other shape must match exactly.
    """
    source = read_safetensors(path)
    own = model.state_dict()
    fresh = []
    if FIRST_CONV in source and source[FIRST_CONV].shape[1] != own[FIRST_CONV].shape[1]:
        source.pop(FIRST_CONV)
        fresh.append(FIRST_CONV)
    source = {k: v for k, v in source.items() if not k.startswith(UNUSED_PREFIXES)}
    missing = [k for k in own if k not in source and k not in fresh and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in source if k not in own]
    wrong = [k for k, v in source.items() if k in own and v.shape != own[k].shape]
    for problem, keys in (("lacks", missing), ("has unknown", unexpected), ("has wrong shapes for", wrong)):
        if keys:
            raise CheckpointError(
                f"{path} {problem} {len(keys)} I3D tensors (e.g. {keys[0]}); "
                "it must be a full-width I3D (encoder.width_divisor 1)"
            )
    model.load_state_dict(source, strict=False)
    return fresh
