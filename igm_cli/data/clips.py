"""Resumable, parallel clip-by-clip preparation shared by the audio-visual datasets.

A plan (split → clips) is decoded in worker processes; each result goes straight into
final-shaped `.npy` memmaps in the partial directory and a per-row status array records
what is done, so memory stays bounded and a re-run of the same plan resumes. Rows of
skipped clips are squeezed out at the end, then the directory is published atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .audio import AudioSpec, spectrogram_of
from .base import MediaError, PrepareOptions
from .manifest import Manifest, finish_prepared, partial_dir
from .staging import REASONS, Staging
from .video import VideoSpec, sampled_frames


@dataclass(frozen=True)
class Clip:
    """One raw clip: its id, class index and the files its modalities come from."""

    id: str
    label: int
    audio: Path
    video: Path


@dataclass(frozen=True)
class AVSpec:
    """How the audio and video of every clip are turned into arrays."""

    audio: AudioSpec
    video: VideoSpec

    def shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Per-clip shape and dtype of each modality."""
        return {"audio": (self.audio.shape, "float32"), "video": (self.video.shape, "uint8")}


def decode_clip(clip: Clip, spec: AVSpec) -> dict[str, np.ndarray] | tuple[str, str]:
    """Worker: the arrays of one clip, or (reason, detail) when it cannot be used."""
    try:  # video first: a file no decoder opens is reported as corrupt video
        video = sampled_frames(clip.video, spec.video)
        return {"audio": spectrogram_of(clip.audio, spec.audio), "video": video}
    except MediaError as e:
        return e.reason, str(e)


def run_pool(fn, arg_tuples: list[tuple], jobs: int) -> Iterator[tuple[int, Any]]:
    """(index, fn(*args)) for every argument tuple, in completion order, on `jobs` processes."""
    if jobs == 1:
        for i, args in enumerate(arg_tuples):
            yield i, fn(*args)
        return
    todo = iter(enumerate(arg_tuples))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        running = {pool.submit(fn, *args): i for i, args in islice(todo, 4 * jobs)}  # bounded window
        try:
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = running.pop(future)
                    if (following := next(todo, None)) is not None:
                        running[pool.submit(fn, *following[1])] = following[0]
                    yield i, future.result()
        finally:
            for future in running:
                future.cancel()


def die_with_parent(parent: int) -> None:
    """Worker initializer: exit as soon as the parent is gone (kill -9 included), never linger.

    Linux delivers SIGKILL on the parent's death (PR_SET_PDEATHSIG); elsewhere, and as a
    fallback, a daemon thread checks once a second whether the worker was re-parented.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # died before we got here
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def fingerprint(plan: dict[str, list[Any]], preprocessing: dict[str, Any], source: Path) -> str:
    """Identifies a plan; a partial directory is resumed only by a run with the same one."""
    doc = {
        "source": str(Path(source).resolve()),
        "preprocessing": preprocessing,
        "plan": {  # id, label, then every file of the clip (any clip dataclass)
            s: [[c.id, c.label, *map(str, dataclasses.astuple(c)[2:])] for c in clips]
            for s, clips in plan.items()
        },
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def prepare_clips(
    out: Path,
    plan: dict[str, list[Any]],
    spec: Any,
    opts: PrepareOptions,
    *,
    dataset: str,
    classes: list[str],
    preprocessing: dict[str, Any],
    skipped: dict[str, list[str]],
    source: Path,
    decode: Callable[[Any, Any], dict[str, np.ndarray] | tuple[str, str]] | None = None,
) -> Manifest:
    """Decode every planned clip (resuming a matching partial directory), then publish `out`.

    `spec` has `shapes()`; `decode(clip, spec)` (default decode_clip; a module-level
    function: workers are spawned) returns the clip's arrays or (skip reason, detail).
    Clips need `.id` and `.label`.
    """
    out = Path(out)
    refuse_if_strict(opts, skipped)
    staging = Staging.open(partial_dir(out), plan, spec.shapes(), fingerprint(plan, preprocessing, source))
    with staging:
        todo = staging.pending()
        total = sum(len(clips) for clips in plan.values())
        opts.say(
            f"{dataset}: {total} clips planned, {total - len(todo)} already done, "
            f"{len(todo)} to decode with {opts.jobs} job(s)"
        )
        fill(staging, todo, spec, opts, decode)
        for reason, ids in staging.skipped().items():
            skipped.setdefault(reason, []).extend(ids)
        refuse_if_strict(opts, skipped)
        refuse_empty_splits(staging.kept(), skipped)
        staging.finish()
        return finish_prepared(
            staging.root,
            out,
            dataset=dataset,
            classes=classes,
            preprocessing=preprocessing,
            source=str(source),
            skipped={r: sorted(ids) for r in REASONS if (ids := skipped.get(r))},
            media=True,
        )


def refuse_if_strict(opts: PrepareOptions, skipped: dict[str, list[str]]) -> None:
    """With --strict, any skipped item is a DataError naming the first."""
    problems = [(ids[0], reason, len(ids)) for reason, ids in skipped.items() if ids]
    if opts.strict and problems:
        first, reason, _ = problems[0]
        more = sum(count for *_, count in problems) - 1
        raise DataError(f"{first}: {reason}" + (f" (and {more} more)" if more else "") + " (--strict)")


def refuse_empty_splits(kept: dict[str, int], skipped: dict[str, list[str]]) -> None:
    """DataError when every item of a split was skipped (naming the reasons)."""
    empty = [split for split, n in kept.items() if n == 0]
    if empty:
        counts = ", ".join(f"{reason} {len(ids)}" for reason, ids in skipped.items() if ids)
        raise DataError(f"every clip of {' and '.join(empty)} was skipped ({counts})")


def fill(
    staging: Staging, todo: list[tuple[str, int, Any]], spec: Any, opts: PrepareOptions,
    decode=None, unit: str = "clips",
) -> None:  # fmt: skip
    """Decode pending items with `decode(item, spec)` into the staging arrays; checkpoint every 10 s."""
    start = last = time.monotonic()
    try:
        args = [(clip, spec) for _, _, clip in todo]
        for n, (i, result) in enumerate(run_pool(decode or decode_clip, args, opts.jobs), start=1):
            split, row, clip = todo[i]
            if isinstance(result, dict):
                staging.write(split, row, result)
            else:
                staging.skip(split, row, result[0])
                if opts.strict:
                    raise DataError(f"{clip.id}: {result[1]} (--strict)")
            if time.monotonic() - last > 10 or n == len(todo):  # checkpoint and report every 10 s
                last = time.monotonic()
                staging.checkpoint()
                opts.say(f"  {n}/{len(todo)} {unit}, {n / max(last - start, 1e-9):.3g} {unit}/s")
    finally:
        staging.checkpoint()
