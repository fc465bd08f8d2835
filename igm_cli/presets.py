"""Preset schema (DESIGN §3): closed, typed, self-documenting; loading, `--set` overrides.

Every field's docstring is what `igm presets show` prints beside it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import PresetError

DATASET_NAMES = ("mfeat",)
DatasetName = Literal["mfeat"]
MetricName = Literal["accuracy", "macro_f1", "map"]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]


class Section(BaseModel):
    """Base of every preset section: unknown keys are errors, docstrings document fields."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class MlpEncoder(Section):
    """A small MLP encoder for vector features (the embedded dataset's views)."""

    name: Literal["mlp"] = "mlp"
    """Encoder registry key."""
    hidden: list[Annotated[int, Field(gt=0)]] = [128]
    """Widths of the hidden layers (Linear → BatchNorm → ReLU each)."""
    dim: Annotated[int, Field(gt=0)] = 64
    """Feature size d of z = φ(x), the input of the head."""
    batchnorm: bool = True
    """BatchNorm1d after every hidden Linear."""
    dropout: Probability = 0.0
    """Dropout before the feature output."""


# One member today; becomes a discriminated union on `name` when ResNet/BERT/I3D arrive.
EncoderSpec = MlpEncoder


class Modality(Section):
    """One modality: its name in the prepared data and its encoder."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]
    """Modality name as in the prepared data's manifest."""
    encoder: EncoderSpec = MlpEncoder()
    """Encoder φ of this modality's branch."""


class Head(Section):
    """Per-branch head Linear(d,w1) → ReLU → Linear(w1,w2) → Linear(w2,C) (paper §4.2)."""

    widths: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)] = [256, 64]
    """Hidden widths; ReLU follows the first Linear only, as in the paper."""


class Stages(Section):
    """Alternating unimodal stages (Algorithm 1)."""

    epochs: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)] = [5, 5]
    """Epochs of each stage; stage s trains modalities[s mod m]."""


class Optimizer(Section):
    """Base optimizer, created afresh at the start of every stage."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    """Optimizer registry key."""
    lr: Annotated[float, Field(gt=0)] = 0.01
    """Learning rate η."""
    momentum: Probability = 0.9
    """SGD momentum."""
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    """Weight decay (coupled L2 for sgd/adam, decoupled for adamw); not projected by T."""
    betas: tuple[Probability, Probability] = (0.9, 0.999)
    """Adam betas."""


class Schedule(Section):
    """Learning-rate schedule over the epochs of one stage (restarts every stage)."""

    name: Literal["constant", "step", "cosine"] = "step"
    """constant, step (multiply by gamma every step_size epochs) or cosine to zero."""
    step_size: Annotated[int, Field(gt=0)] = 40
    """Epochs between decays for `step`."""
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    """Decay factor for `step`."""
    first_epoch_factor: Annotated[float, Field(gt=0, le=1)] = 1.0
    """LR multiplier in a stage's first epoch (the text presets use 2/3)."""


class Gm(Section):
    """Flat projection-based gradient modification (Eq. 2–5)."""

    enabled: bool = True
    """Apply T of the previous modality to the active head's weight gradients."""
    tau: Annotated[float, Field(gt=0)] = 0.4
    """Scaling factor τ of Eq. 4; T's eigenvalues lie in [exp(-τ), 1]."""
    scope: Literal["head"] = "head"
    """Layers GM acts on: the classification head (paper default)."""


class Sam(Section):
    """Sharpness-aware minimisation (Eq. 6–8)."""

    rho: Annotated[float, Field(ge=0)] = 0.05
    """Radius ρ of the perturbation; 0 means a plain step with no second pass."""


class Data(Section):
    """Batching."""

    batch_size: Annotated[int, Field(gt=0)] = 12
    """Training batch size (also the batch of the covariance pass, paper §4.2)."""
    eval_batch_size: Annotated[int, Field(gt=0)] = 256
    """Batch size for evaluation."""


class Baseline(Section):
    """Settings of the `joint` and `unimodal` methods."""

    epochs: Annotated[int, Field(gt=0)] | None = None
    """Epochs; null = the most epochs IGM's stages give any one modality (equal budget)."""
    joint_loss: Literal["fused", "sum"] = "fused"
    """joint: CE of the fused prediction (usual joint training) or the sum of branch CEs."""
    modality: str | None = None
    """unimodal: the branch to train; null = the first modality."""


class Preset(Section):
    """A complete, resolved description of one training run."""

    name: str = "custom"
    """Preset name (used in run directory names)."""
    description: str = ""
    """One line shown by `igm presets list`."""
    dataset: DatasetName = "mfeat"
    """Dataset registry key; the prepared data must match it."""
    method: Literal["igm", "joint", "unimodal"] = "igm"
    """igm (alternating stages + GM + SAM), joint (all branches at once) or unimodal."""
    recipe: Literal["paper"] = "paper"
    """paper: the method as the paper states it (validation-split model selection)."""
    modalities: Annotated[list[Modality], Field(min_length=1)]
    """Branches in stage order."""
    head: Head = Head()
    """Per-branch classification head."""
    stages: Stages = Stages()
    """Stage schedule of method igm."""
    optimizer: Optimizer = Optimizer()
    """Optimizer settings."""
    schedule: Schedule = Schedule()
    """Learning-rate schedule."""
    gm: Gm = Gm()
    """Gradient modification."""
    sam: Sam = Sam()
    """SAM."""
    data: Data = Data()
    """Batching."""
    baseline: Baseline = Baseline()
    """Baseline methods."""
    fusion: Literal["mean", "entropy"] = "mean"
    """Late fusion of branch softmaxes: mean, or per-sample entropy weighting (MLA)."""
    selection: MetricName = "macro_f1"
    """Validation metric of the fused model that selects the best epoch."""
    seed: int = 42
    """Seed of initialisation, shuffling and dropout."""
    device: str = "cpu"
    """torch device: cpu, cuda, cuda:N, or auto."""

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Preset:
        names = [m.name for m in self.modalities]
        problems = []
        if len(set(names)) != len(names):
            problems.append(f"modalities: names must be unique (got {names})")
        if self.method != "unimodal" and len(names) < 2:
            problems.append(f"modalities: method {self.method} needs at least 2 (got {names})")
        if self.baseline.modality is not None and self.baseline.modality not in names:
            problems.append(f"baseline.modality: must be one of {names} (got {self.baseline.modality!r})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def modality_names(self) -> list[str]:
        """Names of the modalities in stage order."""
        return [m.name for m in self.modalities]


# ---------------------------------------------------------------- loading


def shipped_presets() -> dict[str, Path]:
    """Name → path of every preset shipped with the package."""
    root = resources.files("igm_cli.preset_files")
    return {p.name[: -len(".yaml")]: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def read_preset_source(source: str) -> tuple[str, dict[str, Any]]:
    """Read a preset by shipped name or by path; returns (label, raw mapping)."""
    shipped = shipped_presets()
    if source in shipped:
        path = shipped[source]
    else:
        path = Path(source)
        if not path.is_file():
            names = ", ".join(sorted(shipped))
            raise PresetError(f"unknown preset {source!r}: not a shipped preset ({names}) nor a file")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise PresetError(f"cannot read preset {path}: {_first_line(e)}") from None
    if not isinstance(raw, dict):
        raise PresetError(f"invalid preset {path}: the file must hold a mapping")
    return (source if source in shipped else str(path)), raw


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse `dotted.key=value`; the value is a YAML scalar/list, an empty value is null."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise PresetError(f"invalid --set {item!r}: expected key.path=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.strip().split("."), value


def apply_override(raw: dict[str, Any], path: list[str], value: Any) -> None:
    """Set `value` at `path` in the raw mapping; list items are addressed by index or name."""
    node: Any = raw
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        where = ".".join(path[: depth + 1])
        if isinstance(node, list):
            index = _list_index(node, part, where)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise PresetError(f"invalid --set {'.'.join(path)}: {where} is not a section")


def _list_index(items: list[Any], part: str, where: str) -> int:
    if part.isdigit() and int(part) < len(items):
        return int(part)
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    raise PresetError(f"invalid --set: {where}: no list item with index or name {part!r}")


def validate_preset(raw: dict[str, Any], label: str) -> Preset:
    """Validate a raw mapping; every problem is reported as `path: message` on one line."""
    try:
        return Preset.model_validate(raw)
    except ValidationError as e:
        raise PresetError(f"invalid preset {label}: {format_validation_error(e)}") from None


def format_validation_error(e: ValidationError) -> str:
    """Join pydantic errors into `a.b: message (got x); c: ...`."""
    parts = []
    for err in e.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        got = "" if err["type"] in ("missing", "value_error") else f" (got {err['input']!r})"
        parts.append(f"{loc + ': ' if loc else ''}{msg}{got}")
    return "; ".join(parts)


def resolve_preset(source: str = "mfeat", sets: list[str] | tuple[str, ...] = (), **flags: Any) -> Preset:
    """The one precedence chain: preset file < `--set key=value` < explicit flags (non-None)."""
    label, raw = read_preset_source(source)
    for item in sets:
        apply_override(raw, *parse_override(item))
    for key, value in flags.items():
        if value is not None:
            apply_override(raw, key.split("."), value)
    return validate_preset(raw, label)


def preset_to_yaml(preset: Preset) -> str:
    """The resolved preset as YAML (what config.yaml and checkpoints store)."""
    return yaml.safe_dump(preset.model_dump(mode="json"), sort_keys=False)


def preset_from_json(data: dict[str, Any], label: str) -> Preset:
    """Rebuild a preset stored in a run or checkpoint."""
    return validate_preset(data, label)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
