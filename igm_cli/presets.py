"""Presets: loading by name or path, `--set key.path=value` overrides, one-line validation errors.

The schema itself lives in `preset_schema`; this module is the one precedence chain
(preset file < `--set` < explicit flags) and the error formatting.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from .errors import PresetError
from .preset_schema import (
    DatasetName,
    EncoderSpec,
    InputSpec,
    MethodName,
    MlpEncoder,
    Modality,
    Optimizer,
    Preset,
    ResNetEncoder,
    Schedule,
)

__all__ = [
    "DATASET_NAMES",
    "EncoderSpec",
    "InputSpec",
    "MlpEncoder",
    "Modality",
    "Optimizer",
    "Preset",
    "ResNetEncoder",
    "Schedule",
    "resolve_preset",
]

DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)
METHOD_NAMES: tuple[str, ...] = get_args(MethodName)
MAX_PRESET_BYTES = 1 << 20  # a preset is a few KB; a 50 MB file is refused before it is parsed


# ---------------------------------------------------------------- loading


def shipped_presets() -> dict[str, Path]:
    """Name → path of every preset shipped with the package."""
    root = resources.files("igm_cli.preset_files")
    return {p.name[: -len(".yaml")]: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases: a 1 KB "billion laughs" cannot expand."""

    def compose_node(self, parent, index):  # noqa: D102 (PyYAML hook)
        if self.check_event(yaml.events.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(
                f"line {mark.line + 1}, column {mark.column + 1}: YAML aliases are not allowed"
            )
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            mark = event.start_mark
            raise yaml.YAMLError(
                f"line {mark.line + 1}, column {mark.column + 1}: YAML anchors are not allowed"
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """Parse YAML safely (no tags, no aliases); errors say line and column."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise yaml.YAMLError(f"{where}{e.problem or e.context or 'invalid YAML'}") from None
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def read_preset_source(source: str) -> tuple[str, dict[str, Any]]:
    """Read a preset by shipped name or by path; returns (label, raw mapping)."""
    shipped = shipped_presets()
    if source in shipped:
        path = shipped[source]
    else:
        path = Path(source)
        if not path.is_file():
            names = ", ".join(sorted(shipped))
            close = difflib.get_close_matches(source, list(shipped), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PresetError(f"unknown preset {source!r}: not a shipped preset ({names}) nor a file{hint}")
    try:
        if path.stat().st_size > MAX_PRESET_BYTES:
            raise PresetError(f"invalid preset {path}: larger than {MAX_PRESET_BYTES >> 10} KB; not a preset")
        raw = load_yaml(path.read_bytes().decode("utf-8"))
    except PermissionError:
        raise PresetError(f"cannot read preset {path}: permission denied") from None
    except UnicodeDecodeError as e:
        raise PresetError(f"cannot read preset {path}: not UTF-8 text (byte {e.start})") from None
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
        value = load_yaml(text) if text.strip() else None
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


def apply_method_defaults(raw: dict[str, Any], protected: set[str] = frozenset()) -> dict[str, Any]:
    """Merge `method_defaults[<method>]` into the preset, below `--set` (the `protected` keys).

    The section is consumed: a resolved preset (config.yaml, checkpoints) holds the merged
    values and no `method_defaults`, so reading it back never applies them twice.
    """
    defaults = raw.pop("method_defaults", None) or {}
    if not isinstance(defaults, dict):
        raise PresetError("method_defaults: must map a method name to settings")
    chosen = defaults.get(raw.get("method", "igm")) or {}
    if not isinstance(chosen, dict):
        raise PresetError(f"method_defaults.{raw.get('method', 'igm')}: must be a mapping of settings")
    unknown = [m for m in defaults if m not in METHOD_NAMES]
    if unknown:
        raise PresetError(
            f"method_defaults: unknown method {unknown[0]!r} (methods: {', '.join(METHOD_NAMES)})"
        )

    def merge(node: dict[str, Any], update: dict[str, Any], prefix: str) -> None:
        for key, value in update.items():
            path = f"{prefix}{key}"
            if any(path == p or path.startswith(p + ".") or p.startswith(path + ".") for p in protected):
                if isinstance(value, dict) and isinstance(node.get(key), dict):
                    merge(node[key], value, path + ".")
                continue
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                merge(node[key], value, path + ".")
            else:
                node[key] = value

    merge(raw, chosen, "")
    return raw


def override_keys(sets: list[str] | tuple[str, ...] = (), flags: dict[str, Any] | None = None) -> set[str]:
    """Dotted keys set by `--set` items and non-None flags (they win over method_defaults)."""
    keys = {".".join(parse_override(item)[0]) for item in sets}
    return keys | {k for k, v in (flags or {}).items() if v is not None}


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
        got = "" if err["type"] in ("missing", "value_error") else f" (got {_short(err['input'])})"
        if err["type"] == "extra_forbidden":
            got = _did_you_mean(err["loc"])
        parts.append(f"{loc + ': ' if loc else ''}{msg}{got}")
    return "; ".join(parts)


def _short(value: Any, limit: int = 80) -> str:
    """Repr cut to `limit` characters: an error message never grows with the input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """` (did you mean gm.tau?)` for a misspelled key, from the fields of its section."""
    models: list[Any] = [Preset]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        tagged = [m for m in models if m.model_fields.get("name") and m.model_fields["name"].default == part]
        holder = next((m for m in models if part in m.model_fields), None)
        if tagged:  # a discriminated union's tag (encoder `mlp`) in the location
            models = tagged
        elif holder is not None:
            models = _models_in(holder.model_fields[part].annotation)
        else:
            return ""
    names = [name for m in models for name in m.model_fields]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return f" (did you mean {'.'.join(str(p) for p in (*loc[:-1], close[0]))}?)" if close else ""


def _models_in(annotation: Any) -> list[Any]:
    """The pydantic models inside an annotation (`Head`, `list[Modality]`, `Mlp | ResNet`)."""
    if hasattr(annotation, "model_fields"):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def resolve_preset(source: str = "mfeat", sets: list[str] | tuple[str, ...] = (), **flags: Any) -> Preset:
    """The one precedence chain: preset file < method_defaults < `--set key=value` < explicit flags."""
    label, raw = read_preset_source(source)
    for item in sets:
        apply_override(raw, *parse_override(item))
    for key, value in flags.items():
        if value is not None:
            apply_override(raw, key.split("."), value)
    apply_method_defaults(raw, override_keys(sets, flags))
    return validate_preset(raw, label)


def preset_to_yaml(preset: Preset) -> str:
    """The resolved preset as YAML (what config.yaml and checkpoints store)."""
    return yaml.safe_dump(preset.model_dump(mode="json"), sort_keys=False)


def preset_from_json(data: dict[str, Any], label: str) -> Preset:
    """Rebuild a preset stored in a run or checkpoint."""
    return validate_preset(data, label)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
