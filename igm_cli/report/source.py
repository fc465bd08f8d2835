"""What `igm report` reads from a run directory: config.yaml, metrics.jsonl and one checkpoint.

Everything is checked here, so the figure modules get plain data: a directory that is not
a run, a run without epoch records, or a corrupt checkpoint is one line (exit 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from igm_cli.errors import DataError
from igm_cli.runs import read_jsonl


@dataclass
class RunData:
    """One run as the report sees it."""

    path: Path
    name: str
    config: dict[str, Any]  # the resolved preset (config.yaml)
    epochs: list[dict[str, Any]]  # metrics.jsonl epoch records, in order
    stages: list[dict[str, Any]]  # metrics.jsonl stage records (finished stages)
    checkpoint: Path | None = None  # where the T and covariances were read from
    tensors: dict[str, Any] = field(default_factory=dict)  # gm.T.* / gm.cov.* of that checkpoint

    @property
    def method(self) -> str:
        """The training method (igm, joint, mla, ...)."""
        return str(self.config.get("method", "igm"))

    @property
    def modalities(self) -> list[str]:
        """Modality names in stage order."""
        return [str(m.get("name")) for m in self.config.get("modalities", []) if isinstance(m, dict)]

    @property
    def label(self) -> str:
        """`name (method)` or `name (igm w/o SAM)`: how figures and tables name the run."""
        return f"{self.name} ({' '.join([self.method, *self.variant()])})"

    def variant(self) -> list[str]:
        """The paper's ablation names for settings that change what the figures show."""
        if self.method == "mla":
            projection = self.setting("mla.projection", "paper")
            return [] if projection == "paper" else [f"projection {projection}"]
        if self.method not in ("igm", "mie"):
            return []
        parts = ["reference recipe"] if self.setting("recipe") == "reference" else []
        if self.setting("gm.enabled") is False:
            parts.append("w/o GM")
        elif self.setting("gm.targets") is not None:
            parts.append(f"GM on {'+'.join(map(str, self.setting('gm.targets')))} only")
        if self.setting("sam.rho") == 0:
            parts.append("w/o SAM")
        return parts

    def setting(self, dotted: str, default: Any = None) -> Any:
        """A preset value by dotted key, e.g. `gm.enabled`."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


def load_run(path: Path) -> RunData:
    """Read a run directory; the T and covariances come from last.safetensors (else best)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"not a run directory: {path} does not exist or is not a directory")
    metrics, config_file = path / "metrics.jsonl", path / "config.yaml"
    if not config_file.is_file() and not metrics.is_file():
        raise DataError(f"not a run directory: {path} has neither config.yaml nor metrics.jsonl")
    records = read_jsonl(metrics)
    epochs = [r for r in records if isinstance(r, dict) and r.get("kind") == "epoch"]
    if not epochs:
        raise DataError(f"no training metrics in {metrics}: no epoch record (the run ended before one)")
    bad = next((r for r in epochs if not _epoch_record_ok(r)), None)
    if bad is not None:
        raise DataError(f"corrupt metrics in {metrics}: epoch record {str(bad)[:80]!r}")
    stages = [r for r in records if isinstance(r, dict) and r.get("kind") == "stage"]
    bad = next((r for r in stages if not _stage_record_ok(r)), None)
    if bad is not None:
        raise DataError(f"corrupt metrics in {metrics}: stage record {str(bad)[:80]!r}")
    run = RunData(path, path.resolve().name, _config(config_file), epochs, stages)
    _read_spectra_tensors(run)
    return run


def _epoch_record_ok(record: dict[str, Any]) -> bool:
    val = record.get("val")
    return (
        isinstance(record.get("stage"), int)
        and isinstance(record.get("epochs_done"), int)
        and isinstance(record.get("active"), list)
        and isinstance(record.get("train_loss"), int | float)
        and isinstance(val, dict)
        and all(isinstance(v, dict) for v in val.values())
    )


def _stage_record_ok(record: dict[str, Any]) -> bool:
    """A stage index, its modalities and, when present, a well-formed grad_cos_hist."""
    if not isinstance(record.get("stage"), int) or not isinstance(record.get("active"), list):
        return False
    hist = record.get("grad_cos_hist")
    if hist is None:
        return True
    edges, counts = (hist.get("edges"), hist.get("counts")) if isinstance(hist, dict) else (None, None)
    if not isinstance(edges, list) or len(edges) < 2 or not isinstance(counts, dict):
        return False
    numbers = all(isinstance(e, int | float) and not isinstance(e, bool) for e in edges)
    rows = all(
        isinstance(row, list)
        and len(row) == len(edges) - 1
        and all(isinstance(c, int) and c >= 0 for c in row)
        for row in counts.values()
    )
    return numbers and rows and edges == sorted(edges)


def _config(path: Path) -> dict[str, Any]:
    """config.yaml as a mapping ({} when absent: the checkpoint's copy is used then)."""
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"corrupt {path}: {str(e).splitlines()[0][:120]}") from None
    if not isinstance(config, dict):
        raise DataError(f"corrupt {path}: not a mapping")
    return config


def _read_spectra_tensors(run: RunData) -> None:
    """gm.* tensors of the newest checkpoint (a corrupt one is a CheckpointError, exit 3)."""
    from igm_cli.checkpoint import load_checkpoint

    for name in ("last.safetensors", "best.safetensors"):
        candidate = run.path / name
        if candidate.is_file():
            checkpoint = load_checkpoint(candidate)
            run.checkpoint = candidate
            run.tensors = {k: v for k, v in checkpoint.tensors.items() if k.startswith(("gm.", "mla."))}
            run.config = run.config or checkpoint.preset
            return
