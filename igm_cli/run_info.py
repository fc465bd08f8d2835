"""What a run directory says about itself beyond its config: run.json and the failure marker.

`run.json` is written when a run starts: the preset it came from, the `--set` overrides
that differ from that preset, the logger. `failed.json` is written when training stops on
an error other than an interrupt (divergence, a crash), so `igm runs` can tell a failed
run from an interrupted one; a resume that starts removes it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .durable import write_atomic

RUN_INFO = "run.json"
FAILED = "failed.json"
IGNORED_KEYS = {"threads", "device"}  # where it ran, not what it trained (config.yaml has both)
_MISSING = object()


def write_run_info(run_dir: Path, overrides: dict[str, Any] | None, source: str, logger: str | None) -> None:
    """run.json of a new run."""
    info = {
        "source": source,
        "overrides": overrides,
        "logger": logger or "none",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_atomic(Path(run_dir) / RUN_INFO, json.dumps(info, indent=2) + "\n")


def read_json_file(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file; None when absent; ValueError naming the file when corrupt."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path.name}: unreadable ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: not a JSON object")
    return data


def recorded_logger(run_dir: Path) -> str | None:
    """The logger a run was started with (a resume keeps it), None when not recorded."""
    try:
        info = read_json_file(Path(run_dir) / RUN_INFO) or {}
    except ValueError:
        return None
    return info.get("logger") if info.get("logger") != "none" else None


def mark_failed(run_dir: Path, message: str, exit_code: int, kind: str) -> None:
    """Leave `failed.json` (never raises: the original error is what the user must see)."""
    record = {
        "error": message,
        "exit_code": exit_code,
        "kind": kind,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        write_atomic(Path(run_dir) / FAILED, json.dumps(record, indent=2) + "\n")
    except OSError:
        pass


def clear_failed(run_dir: Path) -> None:
    """A resume that starts is no longer a failed run."""
    (Path(run_dir) / FAILED).unlink(missing_ok=True)


# ---------------------------------------------------------------- overrides


def preset_overrides(config: dict[str, Any], source: str) -> dict[str, Any] | None:
    """Keys of a resolved preset (`config`) whose value differs from the preset `source`.

    The preset is resolved with the run's method, so its method_defaults do not count as
    overrides; `method` itself is one when it is not the preset's own. None when `source`
    cannot be resolved any more (a preset file that is gone or broken).
    """
    from .errors import PresetError
    from .presets import resolve_preset

    try:
        own = resolve_preset(source)
        base = resolve_preset(source, method=config.get("method")) if config.get("method") else own
    except (PresetError, OSError):
        return None
    ours, theirs = flatten(config), flatten(base.model_dump(mode="json"))
    diff = {
        key: value
        for key, value in ours.items()
        if key not in IGNORED_KEYS and key != "method" and theirs.get(key, _MISSING) != value
    }
    diff.update({key: None for key in theirs if key not in ours and key not in IGNORED_KEYS})
    if config.get("method") != own.method:
        diff = {"method": config.get("method"), **diff}
    return diff


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys as `--set` addresses them: list items that have a `name` by that name."""
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list) and node and all(isinstance(i, dict) and "name" in i for i in node):
        items = [(str(i["name"]), i) for i in node]
    else:
        return {prefix: node}
    if not items:
        return {prefix: node} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def format_overrides(overrides: dict[str, Any]) -> list[str]:
    """`key=value` strings, values in the YAML-ish spelling `--set` accepts."""
    return [
        f"{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"
        for key, value in overrides.items()
    ]
