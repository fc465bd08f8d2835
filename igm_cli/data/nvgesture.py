"""NVGesture (RGB + depth + optical flow, 25 gestures) from `Video_data/class_XX/subjectYY_rZ/` + the lists.

Each `.lst` line names a clip folder and the START:END window of each sensor; the window
of `sk_color.avi` and `sk_depth.avi` is decoded with PyAV, resized, and flow is computed
from the RGB window (flow.py). Official split 1,050 / 482 plus a seeded, stratified
validation split carved from train. Everything is keyed by the clip path, never by the
position of a line in a list (datasets.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError
from .base import MediaError, PrepareOptions, check_options, require_source
from .clips import prepare_clips
from .flow import FlowSpec, clip_flow
from .manifest import Manifest
from .splits import holdout_size, require_nonempty, stratified_holdout
from .video import sample_indices

NAME = "nvgesture"
MODALITIES = ("rgb", "depth", "flow")
OPTIONS = frozenset({"frames", "frame_size", "seed", "lists", "flow"})
CLASSES = [f"class_{k:02d}" for k in range(1, 26)]  # list label k (1-based) → class k - 1
LISTS = {"train": "nvgesture_train_correct_cvpr2016_v2.lst", "test": "nvgesture_test_correct_cvpr2016_v2.lst"}
SEED, FRAMES, FRAME_SIZE, VAL_FRACTION = 42, 80, 256, 0.1
LAYOUT = "the extracted nvGesture_v1 with Video_data/class_XX/subjectYY_rZ/sk_color.avi, sk_depth.avi"
FIELD = re.compile(r"(\w+):(\S+)")


@dataclass(frozen=True)
class GestureClip:
    """One list line: clip path (the key), class index, and each sensor's file and window."""

    id: str
    label: int
    color: Path
    depth: Path
    color_window: tuple[int, int]
    depth_window: tuple[int, int]


@dataclass(frozen=True)
class GestureSpec:
    """What every clip becomes: F frames of side S per sensor, and the flow of the RGB frames."""

    frames: int
    size: int
    flow: FlowSpec

    def shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Per-clip shape and dtype of each modality."""
        F, S = self.frames, self.size
        return {
            "rgb": ((F, 3, S, S), "uint8"),
            "depth": ((F, 1, S, S), "uint8"),
            "flow": ((F, 2, S, S), "uint8"),
        }


def parse_line(line: str, where: str) -> tuple[str, int, tuple[int, int], tuple[int, int]]:
    """(clip path, class index, colour window, depth window) of one official list line."""
    fields = dict(FIELD.findall(line))
    try:
        path = fields["path"].removeprefix("./").rstrip("/")
        windows = {}
        for sensor in ("color", "depth"):
            _, start, end = fields[sensor].split(":")
            windows[sensor] = (int(start), int(end))
        label = int(fields["label"])
    except (KeyError, ValueError):
        raise DataError(
            f"{where}: expected `path:… depth:sk_depth:S:E color:sk_color:S:E … label:N`"
        ) from None
    if not 1 <= label <= len(CLASSES) or any(e <= s or s < 0 for s, e in windows.values()):
        raise DataError(f"{where}: label must be 1..{len(CLASSES)} and every window START < END")
    return path, label - 1, windows["color"], windows["depth"]


def find_lists(source: Path, lists: Path | None) -> dict[str, Path]:
    """The train and test list files: in --lists, or anywhere under --source."""
    found = {}
    for split, name in LISTS.items():
        if lists is not None:
            path = Path(lists) / name
            found[split] = path if path.is_file() else None
        else:
            found[split] = next(iter(sorted(source.rglob(name))), None)
        if found[split] is None:
            where = f"--lists {lists}" if lists is not None else f"--source {source}"
            raise DataError(
                f"{name} not found in {where} (give the folder of the official lists with --lists)"
            )
    return found


def read_list(path: Path, source: Path, skipped: dict[str, list[str]]) -> list[GestureClip]:
    """The clips of one list sorted by path (never by line); clips missing a video go to `skipped`."""
    clips, seen = [], set()
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        rel, label, color_window, depth_window = parse_line(line, f"{path}:{n}")
        if rel in seen:
            continue
        seen.add(rel)
        folder = (
            source / rel if (source / rel).is_dir() else source.parent / rel
        )  # --source may be Video_data
        color, depth = folder / "sk_color.avi", folder / "sk_depth.avi"
        if not color.is_file() or not depth.is_file():
            skipped.setdefault("missing video", []).append(rel)
            continue
        clips.append(GestureClip(rel, label, color, depth, color_window, depth_window))
    return sorted(clips, key=lambda c: c.id)


def make_splits(train: list[GestureClip], test: list[GestureClip], seed: int) -> tuple[dict, dict]:
    """The official train/test lists; validation = a stratified, seeded share of train."""
    labels = np.array([c.label for c in train])
    rest, held = stratified_holdout(labels, holdout_size(len(train), VAL_FRACTION), seed)
    plan = {"train": [train[i] for i in rest], "val": [train[i] for i in held], "test": test}
    require_nonempty(plan, "NVGesture clips")
    record = {
        "train": LISTS["train"],
        "test": LISTS["test"],
        "val": f"{VAL_FRACTION:.0%} of the train list, stratified by class, seed {seed}",
        "seed": seed,
        "key": "clip path relative to the dataset root (Video_data/class_XX/subjectYY_rZ)",
    }
    return plan, record


def read_window(path: Path, window: tuple[int, int], frames: int, size: int, fmt: str) -> np.ndarray:
    """Frames START..END-1 of a video, `frames` of them evenly, resized: uint8 (F, C, S, S)."""
    import av

    start, end = window
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            kept = []
            for i, frame in enumerate(container.decode(stream)):
                if i >= end:
                    break
                if i >= start:
                    kept.append(frame.reformat(width=size, height=size, format=fmt, interpolation="BILINEAR"))
    except (av.FFmpegError, OSError, ValueError, EOFError, IndexError) as e:
        raise MediaError("corrupt video", f"{path.name}: {str(e).splitlines()[0] if str(e) else e}") from None
    if len(kept) < end - start:
        raise MediaError(
            "window past end", f"{path.name} ends at frame {start + len(kept)}, the list says {end}"
        )
    arrays = [f.to_ndarray() for f in kept]
    picked = np.stack([arrays[i] for i in sample_indices(len(arrays), frames)])
    return picked[:, None] if picked.ndim == 3 else picked.transpose(0, 3, 1, 2)


def decode_gesture(clip: GestureClip, spec: GestureSpec) -> dict[str, np.ndarray] | tuple[str, str]:
    """Worker: the rgb, depth and flow arrays of one clip, or (reason, detail)."""
    try:
        rgb = read_window(clip.color, clip.color_window, spec.frames, spec.size, "rgb24")
        depth = read_window(clip.depth, clip.depth_window, spec.frames, spec.size, "gray")
    except MediaError as e:
        return e.reason, f"{clip.id}: {e}"
    return {"rgb": rgb, "depth": depth, "flow": clip_flow(rgb, spec.flow)}


def prepare(source: Path | None, out: Path, opts: PrepareOptions | None = None) -> Manifest:
    """Raw NVGesture → prepared `rgb` (F×3×S×S), `depth` (F×1×S×S) and `flow` (F×2×S×S), all uint8."""
    opts = opts or PrepareOptions()
    check_options(NAME, OPTIONS, opts)
    source = require_source(NAME, source, LAYOUT)
    if opts.flow == "tvl1" or opts.flow is None:
        _require_tvl1()
    lists = find_lists(source, opts.lists)
    skipped: dict[str, list[str]] = {}
    train, test = (read_list(lists[s], source, skipped) for s in ("train", "test"))
    plan, split_record = make_splits(train, test, SEED if opts.seed is None else opts.seed)
    spec = GestureSpec(opts.frames or FRAMES, opts.frame_size or FRAME_SIZE, FlowSpec(opts.flow or "tvl1"))
    window = "frames START..END-1 of the list line (END exclusive, as the release reads them)"
    sensor = {"window": window, "frames": spec.frames, "frame_indices": "floor((i + 0.5) * n / F) of the n",
              "frame_size": spec.size, "resize": "squash to S×S, FFmpeg swscale bilinear (PyAV)"}  # fmt: skip
    preprocessing = {
        "labels": "list `label:N` (1-based) → class N - 1",
        "lists": {s: str(p) for s, p in lists.items()},
        "rgb": sensor | {"source": "sk_color.avi", "layout": "(F, 3, S, S) RGB", "dtype": "uint8"},
        "depth": sensor | {"source": "sk_depth.avi", "layout": "(F, 1, S, S) grey", "dtype": "uint8"},
        "flow": spec.flow.record(),
        "skipped": "a window past the video's end is skipped (reason `window past end`), not padded",
        "split": split_record,
        "ids": "<split>/ids.txt, one clip path per line, in row order",
    }  # fmt: skip
    return prepare_clips(
        out, plan, spec, opts, dataset=NAME, classes=CLASSES, preprocessing=preprocessing,
        skipped=skipped, source=source, decode=decode_gesture,
    )  # fmt: skip


def _require_tvl1() -> None:
    try:
        import cv2

        cv2.optflow.DualTVL1OpticalFlow_create  # noqa: B018 (only the contrib build has it)
    except (ImportError, AttributeError):
        raise UsageError(
            "--flow tvl1 needs OpenCV's contrib build (pip install opencv-contrib-python-headless); "
            "or use --flow farneback"
        ) from None
