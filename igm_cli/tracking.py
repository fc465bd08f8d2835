"""`--logger tensorboard`: every metrics.jsonl record also goes to TensorBoard event files.

The logger is fed by the run's sink (`RunSink.log`), so whichever process writes
metrics.jsonl is the only one writing events. Steps are `epochs_done` (1, 2, ... across
stages); a resumed run opens the same `<run>/tensorboard/` with `purge_step` = the next
epoch, so TensorBoard drops what a killed process logged past the checkpoint and no step
is shown twice.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any, Protocol

from .errors import UsageError

LOGGERS = ("none", "tensorboard")
EVENT_DIR = "tensorboard"
SKIPPED_STAGE_KEYS = {"kind", "stage", "active", "source", "grad_cos_hist", "gm_pairs"}
_EVENT_SECOND = re.compile(r"^events\.out\.tfevents\.(\d+)\.")


class RunLogger(Protocol):
    """What the sink feeds: every record it writes, then close() once."""

    def log(self, record: dict[str, Any]) -> None: ...  # noqa: D102

    def close(self) -> None: ...  # noqa: D102


def check_logger(name: str | None, why: str = "--logger tensorboard") -> None:
    """Fail before any work when a logger is unknown or its package is missing (exit 2)."""
    if name is None or name == "none":
        return
    if name not in LOGGERS:
        raise UsageError(f"--logger: unknown logger {name!r} (choose from {', '.join(LOGGERS)})")
    _summary_writer(why)


def _summary_writer(why: str = "--logger tensorboard"):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            f"{why} needs the tensorboard package, which is not installed "
            "(pip install 'igm-cli[tensorboard]')"
        ) from None
    return SummaryWriter


def open_logger(name: str | None, run_dir: Path, epochs_done: int) -> RunLogger | None:
    """The logger a run asked for, continuing after `epochs_done` epochs (None: no logger)."""
    check_logger(name)
    if name is None or name == "none":
        return None
    return TensorBoardLogger(Path(run_dir) / EVENT_DIR, epochs_done)


class TensorBoardLogger:
    """Scalars per epoch and stage, gradient-cosine histograms per stage (paper Figure 1)."""

    def __init__(self, log_dir: Path, epochs_done: int = 0):
        _after_existing_files(log_dir)
        self.writer = _summary_writer()(log_dir=str(log_dir), purge_step=epochs_done + 1)
        self.step = epochs_done

    def log(self, record: dict[str, Any]) -> None:
        """Write one metrics.jsonl record; flushed at once (a kill loses no logged epoch)."""
        if record.get("kind") == "epoch":
            self.step = int(record["epochs_done"])
            for tag, value in epoch_scalars(record).items():
                self.writer.add_scalar(tag, value, self.step)
        elif record.get("kind") == "stage":
            for tag, value in stage_scalars(record).items():
                self.writer.add_scalar(tag, value, self.step)
            for tag, histogram in cosine_histograms(record).items():
                self.writer.add_histogram_raw(tag, **histogram, global_step=self.step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


def epoch_scalars(record: dict[str, Any]) -> dict[str, float]:
    """`train/loss`, `train/lr`, `train/stage`, `val/<branch|fused>/<metric>`, `sam/<field>`."""
    scalars = {"train/loss": record["train_loss"], "train/lr": record["lr"], "train/stage": record["stage"]}
    for branch, metrics in record.get("val", {}).items():
        scalars.update({f"val/{branch}/{name}": value for name, value in metrics.items()})
    scalars.update({f"sam/{k}": v for k, v in (record.get("sam_realized") or {}).items()})
    return {tag: float(v) for tag, v in scalars.items() if _is_number(v)}


def stage_scalars(record: dict[str, Any]) -> dict[str, float]:
    """Every numeric field of a stage record, nested keys joined by `/` (`stage/T_trace_ratio/fou/head.0`).

    Lists of per-layer entries (`gm_layers`) are keyed by their `layer`.
    """
    found: dict[str, float] = {}

    def walk(value: Any, tag: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{tag}/{key}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) and "layer" in v for v in value):
            for item in value:  # gm_layers: one entry per layer, named by it
                walk({k: v for k, v in item.items() if k != "layer"}, f"{tag}/{item['layer']}")
        elif _is_number(value):
            found[tag] = float(value)

    for key, value in record.items():
        if key not in SKIPPED_STAGE_KEYS:
            walk(value, f"stage/{key}")
    return found


def cosine_histograms(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`grad_cos_hist` of a stage record as add_histogram_raw arguments, per `<modality>.<layer>`.

    Bins are [edges[i], edges[i+1]); empty bins at both ends are left out, so `min`/`max`
    are the tightest bounds the bins give and the sums use bin centres.
    """
    hist = record.get("grad_cos_hist")
    if not hist:
        return {}
    edges = [float(e) for e in hist["edges"]]
    out = {}
    for layer, counts in hist["counts"].items():
        nonzero = [i for i, c in enumerate(counts) if c]
        if not nonzero:
            continue
        lo, hi = nonzero[0], nonzero[-1] + 1
        centres = [(edges[i] + edges[i + 1]) / 2 for i in range(lo, hi)]
        kept = [int(c) for c in counts[lo:hi]]
        out[f"grad_cos/{layer}"] = {
            "min": edges[lo],
            "max": edges[hi],
            "num": sum(kept),
            "sum": sum(c * x for c, x in zip(kept, centres, strict=True)),
            "sum_squares": sum(c * x * x for c, x in zip(kept, centres, strict=True)),
            "bucket_limits": edges[lo + 1 : hi + 1],
            "bucket_counts": kept,
        }
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _after_existing_files(log_dir: Path) -> None:
    """Start a new event file only in a later second than the existing ones.

    Readers order event files by name, which starts with the second a file was opened: a
    resume within the same second as the previous file would have its purge marker read
    before the events it purges.
    """
    seconds = [
        int(m.group(1)) for p in log_dir.glob("events.out.tfevents.*") if (m := _EVENT_SECOND.match(p.name))
    ]
    while seconds and int(time.time()) <= max(seconds):
        time.sleep(0.05)
