"""`igm runs [DIR]`: one row per run directory (or per trial of a sweep directory), read from disk.

Status, in order of precedence: running (its lock is held), finished (results.json),
failed (failed.json: diverged or crashed), resumable (last.safetensors), empty (no
checkpoint yet: `--resume auto` reuses it). A directory that cannot be read is a row with
status `unreadable` and the reason, never an exception.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError
from .run_info import FAILED, RUN_INFO, flatten, preset_overrides, read_json_file
from .runs import LOCK_NAME, read_jsonl

COLUMNS = ("name", "status", "method", "preset", "dataset", "epoch", "epochs", "val", "test", "seconds")
"""Keys of --sort and --where besides `overrides.<key>`, `branches.<m>.val|test`, `config.<key>`."""
PREFIXES = ("overrides.", "branches.", "config.")
RUN_FILES = ("config.yaml", "metrics.jsonl", "results.json", "last.safetensors", "best.safetensors", RUN_INFO)


@dataclass
class RunRow:
    """One listed run: its JSON fields and its flattened config (for --where config.<key>)."""

    fields: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)


def list_runs(
    runs_dir: Path, where: list[str] | tuple[str, ...] = (), sort: str | None = None
) -> list[dict[str, Any]]:
    """The rows of every run under `runs_dir` (or of `runs_dir` itself when it is a run)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UsageError(f"no runs directory {runs_dir}")
    filters = [_parse_where(item) for item in where]
    key, descending = _parse_sort(sort) if sort else ("name", False)
    rows = [
        read_run(p, str(p.relative_to(runs_dir)) if p != runs_dir else p.name) for p in run_dirs(runs_dir)
    ]
    rows = [r for r in rows if all(_matches(r, k, v) for k, v in filters)]
    present = [r for r in rows if _value(r, key) is not None]
    present.sort(key=lambda r: _sort_key(_value(r, key)), reverse=descending)
    return [r.fields for r in present + [r for r in rows if _value(r, key) is None]]


def run_dirs(runs_dir: Path) -> list[Path]:
    """The run itself, a sweep's trial runs (`trials/<id>/<run>`), or the subdirectories."""
    if _is_run(runs_dir):
        return [runs_dir]
    if (runs_dir / "sweep.json").is_file():
        return sorted(p for p in (runs_dir / "trials").glob("*/*") if p.is_dir())
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_run(path: Path) -> bool:
    return any((path / name).exists() for name in RUN_FILES)


def read_run(run_dir: Path, name: str | None = None) -> RunRow:
    """A row for one directory; whatever goes wrong is the row's `note`."""
    fields: dict[str, Any] = {"name": name or run_dir.name, "path": str(run_dir), "status": "unreadable"}
    fields.update(dict.fromkeys(COLUMNS[2:]))
    fields.update(overrides=None, overrides_from="unknown", branches={}, note=None)
    try:
        if not _is_run(run_dir):
            raise ValueError("not a run directory (no config.yaml)")
        config = _read_config(run_dir)
        fields.update(_status(run_dir))
        fields.update(preset=config.get("name"), dataset=config.get("dataset"), method=config.get("method"))
        fields.update(_overrides(run_dir, config))
        fields.update(_scores(run_dir, fields["status"]))
        return RunRow(fields, flatten(config))
    except (ValueError, OSError) as e:
        fields["status"], fields["note"] = "unreadable", _reason(e)
        return RunRow(fields)


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ValueError("no config.yaml")
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"config.yaml: unreadable ({type(e).__name__})") from None
    if not isinstance(config, dict):
        raise ValueError("config.yaml: not a mapping")
    return config


def _status(run_dir: Path) -> dict[str, Any]:
    holder, alive = lock_holder(run_dir)
    if alive:
        return {"status": "running", "note": holder}
    note = f"killed: {holder} died holding the lock" if holder else None
    if (run_dir / "results.json").is_file():
        return {"status": "finished", "note": None}
    failure = read_json_file(run_dir / FAILED)
    if failure is not None:
        return {"status": "failed", "note": str(failure.get("error", "failed"))}
    if (run_dir / "last.safetensors").is_file():
        return {"status": "resumable", "note": note or f"igm train --resume {run_dir}"}
    return {"status": "empty", "note": note or "no checkpoint yet"}


def lock_holder(run_dir: Path) -> tuple[str | None, bool]:
    """(the holder named in the lock file, whether it still holds it), without taking the lock.

    On this host the pid is checked; a holder on another host is probed with a shared flock,
    released at once.
    """
    path = Path(run_dir) / LOCK_NAME
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, IsADirectoryError):
        return None, False
    parts = text.split()  # "pid 123 on host name"
    if len(parts) == 5 and parts[0] == "pid" and parts[1].isdigit() and parts[4] == socket.gethostname():
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            return text, False
        except PermissionError:
            pass  # alive, owned by someone else
        return text, True
    return text or "an unknown process", _flock_held(path)


def _flock_held(path: Path) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _overrides(run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Recorded at train time (run.json); for older runs, config.yaml against the shipped preset."""
    info = read_json_file(run_dir / RUN_INFO)
    if info is not None and isinstance(info.get("overrides"), dict):
        return {"overrides": info["overrides"], "overrides_from": "recorded"}
    from .presets import shipped_presets

    name = config.get("name")
    if info is None and name in shipped_presets():
        diff = preset_overrides(config, name)
        if diff is not None:
            return {"overrides": diff, "overrides_from": f"config.yaml vs shipped {name}"}
    return {"overrides": None, "overrides_from": "unknown"}


def _scores(run_dir: Path, status: str) -> dict[str, Any]:
    """Selected epoch, fused and branch accuracy: results.json, else the best epoch record so far."""
    results = read_json_file(run_dir / "results.json") if status == "finished" else None
    if results is not None:
        val, test = results.get("val") or {}, results.get("test") or {}
        return {
            "epoch": (results.get("selection") or {}).get("epoch"),
            "epochs": results.get("epochs"),
            "val": _accuracy(val, "fused"),
            "test": _accuracy(test, "fused"),
            "branches": {m: {"val": _accuracy(val, m), "test": _accuracy(test, m)} for m in _branches(val)},
            "seconds": results.get("seconds"),
        }
    epochs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "epoch"]
    best = [r for r in epochs if r.get("best")]
    val = (best[-1].get("val") or {}) if best else {}
    return {
        "epoch": best[-1].get("epochs_done") if best else None,
        "epochs": epochs[-1].get("epochs_done") if epochs else 0,
        "val": _accuracy(val, "fused"),
        "branches": {m: {"val": _accuracy(val, m), "test": None} for m in _branches(val)},
    }


def _branches(metrics: dict[str, Any]) -> list[str]:
    return [m for m in metrics if m != "fused"]


def _accuracy(metrics: dict[str, Any], branch: str) -> float | None:
    value = (metrics.get(branch) or {}).get("accuracy")
    return value if isinstance(value, int | float) else None


def _reason(e: Exception) -> str:
    if isinstance(e, PermissionError):
        return f"permission denied: {e.filename}"
    if isinstance(e, OSError):
        return f"{e.strerror or type(e).__name__}: {e.filename}"
    return str(e)


# ---------------------------------------------------------------- --where and --sort


def _parse_where(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--where {item!r}: expected key=value (e.g. method=igm)")
    return _check_key(key.strip(), "--where"), value.strip()


def _parse_sort(sort: str) -> tuple[str, bool]:
    descending = sort.startswith("-")
    return _check_key(sort.removeprefix("-"), "--sort"), descending


def _check_key(key: str, option: str) -> str:
    if key in COLUMNS or (key.startswith(PREFIXES) and key not in PREFIXES):
        return key
    keys = ", ".join(COLUMNS)
    raise UsageError(
        f"{option}: unknown key {key!r} (use {keys}, overrides.KEY, branches.M.val|test, config.KEY)"
    )


def _value(row: RunRow, key: str) -> Any:
    if key.startswith("config."):
        return row.config.get(key.removeprefix("config."))
    if key.startswith("overrides."):
        return (row.fields["overrides"] or {}).get(key.removeprefix("overrides."))
    if key.startswith("branches."):
        branch, _, split = key.removeprefix("branches.").rpartition(".")
        return (row.fields["branches"].get(branch) or {}).get(split)
    return row.fields.get(key)


def _matches(row: RunRow, key: str, text: str) -> bool:
    """Equal as values (`--where sam.rho=0` matches 0.0, `lr=1e38` matches 1.0e+38), or as text."""
    value = _value(row, key)
    return value == _parse_value(text) or (value is not None and str(value) == text)


def _parse_value(text: str) -> Any:
    """YAML, plus the numbers YAML 1.1 reads as text (1e38); `--set` accepts those too."""
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers before text; within each, natural order (None never reaches here)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))
