"""The sweep directory's files: `sweep.json`, `trials/<id>.json`, written atomically.

Temporary names are unique per writer (mkstemp), so machines sharing a directory over a
network filesystem never clobber each other's half-written files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from igm_cli.durable import write_atomic


def trial_path(out: Path, trial_id: str) -> Path:
    """The status file of one trial."""
    return Path(out) / "trials" / f"{trial_id}.json"


def read_json(path: Path) -> Any:
    """A JSON document, or None when the file is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, document: Any) -> None:
    """JSON, written atomically."""
    write_text_atomic(path, json.dumps(document, indent=2) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write durably under a unique temporary name (shards share the directory), then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, unique=True)


def read_trials(out: Path, trial_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The status records present for these trial ids."""
    records = {tid: read_json(trial_path(out, tid)) for tid in trial_ids}
    return {tid: r for tid, r in records.items() if isinstance(r, dict)}
