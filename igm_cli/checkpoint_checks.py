"""What a checkpoint's metadata claims, checked before anything is allocated (hostile files exit 3).

The model is sized by building it on torch's `meta` device (shapes only, no memory) from
the preset in the file, and compared key by key with the tensors the header declares:
a file whose metadata describes a 10⁹-unit layer fails here in milliseconds instead of
allocating gigabytes. `--resume` additionally requires exactly what it restores.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .checkpoint import Checkpoint, TensorSpec
from .engine.grad_cosine import COSINE_EDGES, METER_PREFIX
from .errors import CheckpointError, PresetError
from .presets import Preset, preset_from_json

SAFETENSORS_DTYPE = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}  # fmt: skip
MAX_INPUT_VALUES = 1 << 32  # per-sample input size a model description may claim
MAX_CLASSES = 100_000
OPTIM_KEY = re.compile(r"^optim\.(\d{1,6})\.([A-Za-z_][A-Za-z0-9_]{0,63})$")
RNG_KEY = re.compile(r"^rng\.(cpu|cuda\.\d{1,3})$")


def verify_checkpoint(checkpoint: Checkpoint, specs: dict[str, TensorSpec], *, resume: bool) -> None:
    """Raise a CheckpointError naming the first thing the file gets wrong."""
    preset = _preset(checkpoint)
    _model_info(checkpoint, preset)
    from .engine.stages import StageSchedule

    schedule = StageSchedule.from_preset(preset)
    _state(checkpoint, [s.epochs for s in schedule.stages], resume)
    model = meta_model(checkpoint, preset)
    _model_tensors(checkpoint, model, specs)
    _gm_tensors(checkpoint, _gm_inputs(model, preset), specs)
    if resume:
        _resume_requirements(checkpoint, model, specs, preset, schedule)
    # a method's own state (MLA's `mla.P`) lives under its name; checked finite when loaded
    own = ("model.", "gm.", f"{preset.method}.")
    stray = [k for k in specs if not k.startswith(own) and not _resume_key(k)]
    if stray:
        raise CheckpointError(f"checkpoint {checkpoint.path}: unexpected tensor {stray[0][:80]!r}")


def _fail(checkpoint: Checkpoint, message: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {checkpoint.path}: {message}")


def _preset(checkpoint: Checkpoint) -> Preset:
    try:
        return preset_from_json(checkpoint.preset, "in its metadata")
    except PresetError as e:
        raise _fail(checkpoint, str(e)[:400]) from None


def _model_info(checkpoint: Checkpoint, preset: Preset) -> None:
    """input_shapes, classes, dataset and data_dir: present, typed, and within bounds."""
    info = checkpoint.model_info
    for key in ("input_shapes", "classes", "dataset", "data_dir"):
        if key not in info:
            raise _fail(checkpoint, f"metadata model.{key} is missing")
    shapes, classes = info["input_shapes"], info["classes"]
    if not isinstance(shapes, dict):
        raise _fail(checkpoint, "metadata model.input_shapes is not a mapping")
    for m in preset.modality_names:
        shape = shapes.get(m)
        if not (isinstance(shape, list) and 1 <= len(shape) <= 8 and _positive_ints(shape)):
            raise _fail(checkpoint, f"metadata model.input_shapes.{m} is not a list of positive sizes")
        if math.prod(shape) > MAX_INPUT_VALUES:
            raise _fail(checkpoint, f"metadata model.input_shapes.{m} claims {math.prod(shape):.3g} values")
    if not (isinstance(classes, list) and 2 <= len(classes) <= MAX_CLASSES):
        raise _fail(checkpoint, f"metadata model.classes must list 2 to {MAX_CLASSES} class names")
    if not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise _fail(checkpoint, "metadata model.classes must be distinct strings")
    if preset.num_classes is not None and preset.num_classes != len(classes):
        raise _fail(checkpoint, f"preset num_classes {preset.num_classes} but {len(classes)} classes")
    if info["dataset"] != preset.dataset:
        raise _fail(checkpoint, f"metadata model.dataset {str(info['dataset'])[:40]!r} is not the preset's")
    if info["data_dir"] is not None and not isinstance(info["data_dir"], str):
        raise _fail(checkpoint, "metadata model.data_dir is not a path")
    configs = info.get("encoder_configs", {})
    if not isinstance(configs, dict) or not all(
        m in preset.modality_names and isinstance(c, dict) for m, c in configs.items()
    ):
        raise _fail(checkpoint, "metadata model.encoder_configs must map modalities to configs")


def _positive_ints(values: Iterable[Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


def _state(checkpoint: Checkpoint, epochs: list[int], resume: bool) -> None:
    """Every TrainState field, of its type, and a position that exists in the schedule."""
    from .engine.trainer import TrainState

    state, fields = checkpoint.state, {f.name: f for f in dataclasses.fields(TrainState)}
    unknown = sorted(set(state) - set(fields))
    missing = [name for name in fields if name not in state]
    if unknown or missing:
        which = f"unknown key state.{unknown[0]}" if unknown else f"missing key state.{missing[0]}"
        raise _fail(checkpoint, f"metadata has {which}"[:200])
    for name, field in fields.items():
        if not _of_type(state[name], str(field.type)):
            raise _fail(checkpoint, f"metadata state.{name} should be {field.type} (got {state[name]!r:.40})")
    stage, epoch, batch = state["stage"], state["epoch"], state["batch"]
    if stage > len(epochs):
        raise _fail(checkpoint, f"state.stage {stage} is beyond the preset's {len(epochs)} stages")
    limit = epochs[stage] if stage < len(epochs) else 0
    if epoch > limit or (resume and stage < len(epochs) and epoch >= limit):
        raise _fail(checkpoint, f"state.epoch {epoch} is beyond stage {stage}'s {limit} epochs")
    if stage == len(epochs) and batch:
        raise _fail(checkpoint, f"state.batch {batch} after the last stage")
    if state["epochs_done"] != sum(epochs[:stage]) + epoch:
        raise _fail(checkpoint, f"state.epochs_done {state['epochs_done']} does not match stage {stage}")
    meter = state.get("gm_meter") or {}
    for key, value in meter.items():
        if key.startswith(METER_PREFIX):  # a gradient-cosine histogram: K counts
            if not (isinstance(value, list) and len(value) == len(COSINE_EDGES) - 1 and _counts(value)):
                bins = len(COSINE_EDGES) - 1
                raise _fail(checkpoint, f"metadata state.gm_meter.{key[:60]} must be {bins} counts")
        elif not (isinstance(value, list) and len(value) == 2 and _finite_numbers(value)):
            raise _fail(checkpoint, "metadata state.gm_meter entries must be two finite numbers")


def _counts(values: list[Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62 for v in values)


def _of_type(value: Any, annotation: str) -> bool:
    """Check a JSON value against a TrainState annotation (an unknown annotation is accepted)."""
    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62,
        "float": lambda v: _finite_numbers([v]),
        "bool": lambda v: isinstance(v, bool),
        "dict[str, list[float]]": lambda v: isinstance(v, dict),
    }
    options = [a.strip() for a in annotation.split("|")]
    if "None" in options and value is None:
        return True
    known = [checks[a] for a in options if a in checks]
    return not known or any(check(value) for check in known)


def _finite_numbers(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def meta_model(checkpoint: Checkpoint, preset: Preset):
    """The model the metadata describes, on the meta device: exact shapes, no memory."""
    from .pipeline import build_for

    # I3D's converted weights are loaded into an architecture the preset fixes: not read here.
    # (BERT and ResNet-50 take their architecture from the pretrained config, which is read.)
    modalities = [
        m.model_copy(update={"encoder": m.encoder.model_copy(update={"weights": None})})
        if m.encoder.name == "i3d" and getattr(m.encoder, "weights", None)
        else m
        for m in preset.modalities
    ]
    preset = preset.model_copy(update={"modalities": modalities})
    try:
        with torch.random.fork_rng(devices=[]):  # build_for seeds; leave the caller's RNG alone
            return build_for(preset, checkpoint.model_info, torch.device("meta"))
    except (RuntimeError, ValueError, TypeError, OverflowError, KeyError, AttributeError) as e:
        raise _fail(checkpoint, f"cannot size the model its metadata describes: {str(e)[:200]}") from None


def _model_tensors(checkpoint: Checkpoint, model: torch.nn.Module, specs: dict[str, TensorSpec]) -> None:
    """`model.*` in the file must be exactly the described model's state: names, shapes, dtypes."""
    expected = {f"model.{k}": v for k, v in model.state_dict().items()}
    present = {k: v for k, v in specs.items() if k.startswith("model.")}
    want = sum(v.numel() for v in expected.values())
    have = sum(math.prod(v.shape) for v in present.values())
    missing, extra = sorted(set(expected) - set(present)), sorted(set(present) - set(expected))
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has {extra[0][:80]} that its model lacks"
        raise _fail(
            checkpoint,
            f"its metadata describes a model of {want:,} values, the file holds {have:,} and {what}",
        )
    for key, tensor in expected.items():
        spec, dtype = present[key], SAFETENSORS_DTYPE.get(tensor.dtype)
        if spec.shape != tuple(tensor.shape):
            raise _fail(
                checkpoint, f"{key} has shape {list(spec.shape)}, its model needs {list(tensor.shape)}"
            )
        if spec.dtype != dtype:
            raise _fail(checkpoint, f"{key} is {spec.dtype}, its model needs {dtype}")


def _gm_inputs(model, preset: Preset) -> dict[str, dict[str, int]]:
    """Modality → GM layer under the preset's gm.scope → the side of its T and covariance."""
    if preset.gm.scope == "head":
        return {m: {name: lin.in_features for name, lin in model.head_linears(m)} for m in model.modalities}
    from .engine.gm_scope import branch_scope, t_size

    return {
        m: {
            name: t_size(layer)
            for name, layer in branch_scope(model.branch(m), "fraction", preset.gm.fraction).layers
        }
        for m in model.modalities
    }


def _gm_tensors(
    checkpoint: Checkpoint, heads: dict[str, dict[str, int]], specs: dict[str, TensorSpec]
) -> None:
    """gm.T.<modality>.<layer> and gm.cov.<...>: a GM layer of the model (gm.scope), (d, d) float64."""
    for key, spec in specs.items():
        if not key.startswith("gm."):
            continue
        parts = key.split(".", 3)
        if len(parts) != 4 or parts[1] not in ("T", "cov") or parts[3] not in heads.get(parts[2], {}):
            raise _fail(checkpoint, f"unexpected tensor {key[:80]!r} (no such modality or GM layer)")
        d = heads[parts[2]][parts[3]]
        if spec.shape != (d, d) or spec.dtype != "F64":
            raise _fail(
                checkpoint, f"{key} must be F64 of shape [{d}, {d}] (got {spec.dtype} {list(spec.shape)})"
            )


def _resume_key(key: str) -> bool:
    return bool(OPTIM_KEY.match(key) or RNG_KEY.match(key))


def _resume_requirements(checkpoint: Checkpoint, model, specs, preset: Preset, schedule) -> None:
    """RNG state, optimizer metadata matching its tensors, and the T of every finished stage."""
    rng = specs.get("rng.cpu")
    expected = tuple(torch.get_rng_state().shape)
    if rng is None or rng.dtype != "U8" or rng.shape != expected:
        raise _fail(checkpoint, f"rng.cpu must be U8 of shape {list(expected)} to resume exactly")
    for key, spec in specs.items():
        if key.startswith("rng.cuda.") and (spec.dtype != "U8" or len(spec.shape) != 1):
            raise _fail(checkpoint, f"{key} must be a U8 vector")
    if "optimizer" not in checkpoint.extra:
        raise _fail(checkpoint, "no optimizer state; resume from a run's last.safetensors")
    meta, optim = checkpoint.extra["optimizer"], [k for k in specs if k.startswith("optim.")]
    bad = [k for k in optim if not OPTIM_KEY.match(k)]
    if bad:
        raise _fail(checkpoint, f"unexpected tensor {bad[0][:80]!r}")
    state = checkpoint.state
    if meta is None and (optim or state["epoch"] or state["batch"]):
        raise _fail(checkpoint, f"no optimizer state but it stops inside stage {state['stage']}")
    if meta is not None:
        groups, scalars = (
            (meta.get("param_groups"), meta.get("scalars")) if isinstance(meta, dict) else (0, 0)
        )
        if not (isinstance(groups, list) and groups and all(isinstance(g, dict) for g in groups)):
            raise _fail(checkpoint, "metadata extra.optimizer.param_groups is malformed")
        if not isinstance(scalars, dict):
            raise _fail(checkpoint, "metadata extra.optimizer.scalars is malformed")
    _finished_stage_T(checkpoint, model, specs, preset, schedule)


def _finished_stage_T(checkpoint: Checkpoint, model, specs, preset: Preset, schedule) -> None:
    """Every single-modality stage before state.stage left T and covariance of each GM layer."""
    if not (preset.gm.enabled and preset.method == "igm"):
        return
    heads = _gm_inputs(model, preset)
    for stage in schedule.stages[: checkpoint.state["stage"]]:
        if len(stage.active) != 1:
            continue
        m = stage.active[0]
        for kind in ("T", "cov"):
            for layer in heads.get(m, {}):
                if f"gm.{kind}.{m}.{layer}" not in specs:
                    raise _fail(
                        checkpoint, f"lacks gm.{kind}.{m}.{layer}, which stage {stage.index} produced"
                    )


def check_optimizer_state(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    *,
    allow_empty: bool,
    source: Path | str,
) -> dict[int, dict[str, Any]]:
    """The stored state per parameter index, checked against what this optimizer keeps.

    What "keeps" means is measured, not listed: one step of the same optimizer class on a
    probe parameter shows which buffers it creates, which are parameter-shaped and their dtype.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    groups = meta["param_groups"]
    if len(groups) != len(optimizer.param_groups) or any(
        not isinstance(g.get("params"), list) or len(g["params"]) != len(c["params"])
        for g, c in zip(groups, optimizer.param_groups, strict=False)
    ):
        raise CheckpointError(f"{source}: optimizer param_groups do not match the stage's parameters")
    for stored, current in zip(groups, optimizer.param_groups, strict=True):
        for key, value in current.items():
            if key != "params" and not _same_kind(stored.get(key, _MISSING), value):
                raise CheckpointError(f"{source}: optimizer setting {key} is {stored.get(key)!r:.40}")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        match = OPTIM_KEY.match(key)
        if match:
            state.setdefault(int(match[1]), {})[match[2]] = value
    for key, value in meta["scalars"].items():
        index, _, name = str(key).partition(".")
        if not index.isdigit() or not _finite_numbers([value]):
            raise CheckpointError(f"{source}: optimizer scalar {str(key)[:40]!r} is malformed")
        state.setdefault(int(index), {})[name] = value
    stray = sorted(i for i in state if i >= len(params))
    if stray:
        raise CheckpointError(f"{source}: optimizer state for parameter {stray[0]} of {len(params)}")
    if not state and allow_empty:
        return state
    probe = _probe_state(optimizer)
    for i, p in enumerate(params):
        entry = state.get(i, {})
        if set(entry) != set(probe):
            gone = sorted(set(probe) - set(entry)) or sorted(set(entry) - set(probe))
            raise CheckpointError(
                f"{source}: optimizer state of parameter {i}: {gone[0]} missing or unexpected"
            )
        for name, (param_shaped, shape, dtype) in probe.items():
            value = entry[name]
            if shape is None:
                continue  # a scalar kept as a number (checked finite above)
            want = tuple(p.shape) if param_shaped else shape
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != want or value.dtype != dtype:
                raise CheckpointError(f"{source}: optim.{i}.{name} must be {dtype} of shape {list(want)}")
    return state


_MISSING = object()


def _same_kind(stored: Any, current: Any) -> bool:
    """A stored hyperparameter has the type of the current one (numbers interchangeable)."""
    if isinstance(current, bool) or current is None:
        return stored is current or stored == current
    if isinstance(current, int | float):
        return _finite_numbers([stored])
    if isinstance(current, tuple | list):
        return (
            isinstance(stored, tuple | list) and len(stored) == len(current) and _finite_numbers(list(stored))
        )
    return isinstance(stored, type(current))


def _probe_state(optimizer: torch.optim.Optimizer) -> dict[str, tuple[bool, tuple[int, ...] | None, Any]]:
    """Name → (parameter-shaped, shape, dtype) of the state one step of this optimizer creates."""
    probe = torch.nn.Parameter(torch.zeros(3))
    twin = type(optimizer)([probe])
    twin.param_groups[0].update({k: v for k, v in optimizer.param_groups[0].items() if k != "params"})
    twin.param_groups[0]["lr"] = 0.0
    probe.grad = torch.ones(3)
    twin.step()
    out = {}
    for name, value in twin.state[probe].items():
        if isinstance(value, torch.Tensor):
            out[name] = (tuple(value.shape) == (3,), tuple(value.shape), value.dtype)
        else:
            out[name] = (False, None, None)
    return out
