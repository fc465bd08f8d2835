"""The sweep directory's files: `sweep.json`, `trials/<id>.json`, written atomically.

Temporary names are unique per writer (mkstemp), so machines sharing a directory over a
network filesystem never clobber each other's half-written files.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


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
    """Write under a unique temporary name in the same directory, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; others sharing the sweep must read it
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_trials(out: Path, trial_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The status records present for these trial ids."""
    records = {tid: read_json(trial_path(out, tid)) for tid in trial_ids}
    return {tid: r for tid, r in records.items() if isinstance(r, dict)}
