"""The dataset-module protocol (STYLE §12) and the options of `igm prepare`.

Every `data/<name>.py` exposes NAME, MODALITIES, OPTIONS (the dataset-specific option
names it accepts) and `prepare(source, out, opts) -> Manifest`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

from ..errors import DataError, UsageError
from .manifest import Manifest

# Options every dataset accepts; the others must be listed in the module's OPTIONS.
GENERAL_OPTIONS = frozenset({"jobs", "strict", "progress"})
TARGETS = ("substitute", "mask", "append")  # twitter2015: what becomes of the `$T$` placeholder


class MediaError(Exception):
    """A clip that cannot be used; `reason` is one of the skip reasons recorded in the manifest."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class PrepareOptions:
    """Everything `igm prepare` can be told; None means "the dataset's default"."""

    jobs: int = 1
    strict: bool = False
    frames: int | None = None
    fps: float | None = None
    frame_size: int | None = None
    seed: int | None = None
    split_file: Path | None = None
    speaker_independent: bool = False
    annotations: Path | None = None
    lists: Path | None = None
    flow: str | None = None
    # text–image datasets (twitter2015, sarcasm)
    images: Path | None = None
    tokenizer: str | None = None
    max_tokens: int | None = None
    image_size: int | None = None
    target: str | None = None
    label: str | None = None
    progress: Callable[[str], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        checks = [
            ("--jobs", self.jobs, ">= 1", self.jobs >= 1),
            ("--frames", self.frames, ">= 1", self.frames is None or self.frames >= 1),
            ("--fps", self.fps, "> 0", self.fps is None or self.fps > 0),
            ("--frame-size", self.frame_size, ">= 8", self.frame_size is None or self.frame_size >= 8),
            ("--flow", self.flow, "tvl1 or farneback", self.flow in (None, "tvl1", "farneback")),
            ("--max-tokens", self.max_tokens, ">= 4", self.max_tokens is None or self.max_tokens >= 4),
            ("--image-size", self.image_size, ">= 16", self.image_size is None or self.image_size >= 16),
            ("--target", self.target, "substitute, mask or append", self.target in (None, *TARGETS)),
            ("--label", self.label, "human or hashtag", self.label in (None, "human", "hashtag")),
        ]
        bad = [f"{flag} must be {rule} (got {value})" for flag, value, rule, ok in checks if not ok]
        if bad:
            raise UsageError("; ".join(bad))

    def given(self) -> set[str]:
        """Names of the options set to something other than their default."""
        return {f.name for f in fields(self) if getattr(self, f.name) != f.default}

    def say(self, message: str) -> None:
        """Report progress, if anyone listens."""
        if self.progress is not None:
            self.progress(message)


class DatasetModule(Protocol):
    """What the DATASETS registry holds."""

    NAME: str
    MODALITIES: tuple[str, ...]

    def prepare(self, source: Path | None, out: Path, opts: PrepareOptions) -> Manifest:
        """Turn the raw download at `source` into the prepared format at `out`."""
        ...


def check_options(name: str, accepted: frozenset[str], opts: PrepareOptions) -> None:
    """UsageError naming every option that does not apply to dataset `name`."""
    extra = sorted(opts.given() - GENERAL_OPTIONS - accepted)
    if extra:
        flags = ", ".join("--" + option.replace("_", "-") for option in extra)
        raise UsageError(f"{flags} {'does' if len(extra) == 1 else 'do'} not apply to {name}")


def require_source(name: str, source: Path | None, hint: str) -> Path:
    """The raw-download directory, which must exist (UsageError if not given at all)."""
    if source is None:
        raise UsageError(f"{name} needs --source: {hint}")
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"--source {source} is not a directory ({name}: {hint})")
    return source
