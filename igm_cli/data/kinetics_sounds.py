"""Kinetics-Sounds (audio + video, 31 classes): Kinetics-400 clips filtered by the annotation CSVs.

Clips `<youtube_id>_<start:06d>_<end:06d>.mp4` anywhere under --source; CSVs with
`label, youtube_id, time_start, time_end, split`. Audio 35,400 Hz, 10 s → 257×1003; 3
frames at 1 fps; clips with ≤ 3 frames dropped (datasets.md).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import DataError
from .audio import AudioSpec
from .base import PrepareOptions, check_options, require_source
from .clips import AVSpec, Clip, prepare_clips
from .manifest import Manifest
from .splits import require_nonempty, stratified_holdout
from .video import VideoSpec

NAME = "kinetics-sounds"
MODALITIES = ("audio", "video")
OPTIONS = frozenset({"frames", "fps", "frame_size", "seed", "annotations"})
CLASSES = sorted(
    [
        "blowing nose", "blowing out candles", "bowling", "chopping wood", "dribbling basketball",
        "laughing", "mowing lawn", "playing accordion", "playing bagpipes", "playing bass guitar",
        "playing clarinet", "playing drums", "playing guitar", "playing harmonica", "playing keyboard",
        "playing organ", "playing piano", "playing saxophone", "playing trombone", "playing trumpet",
        "playing violin", "playing xylophone", "ripping paper", "shoveling snow", "shuffling cards",
        "singing", "stomping grapes", "tap dancing", "tapping guitar", "tapping pen", "tickling",
    ]
)  # fmt: skip
SPLIT_NAMES = {"train": "train", "val": "val", "validate": "val", "valid": "val", "test": "test"}
COLUMNS = {"youtube_id", "time_start", "time_end", "split"}
SEED, FRAMES, FPS, FRAME_SIZE = 42, 3, 1.0, 224
AUDIO = AudioSpec(sample_rate=35_400, seconds=10.0)
LAYOUT = "Kinetics-400 clips <youtube_id>_<start:06d>_<end:06d>.mp4 (any folders below it)"


def clip_name(row: dict[str, str]) -> str:
    """File stem of an annotation row's clip."""
    start, end = (int(float(row[k])) for k in ("time_start", "time_end"))
    return f"{row['youtube_id'].strip()}_{start:06d}_{end:06d}"


def read_annotations(csv_dir: Path) -> list[dict[str, str]]:
    """Every row of the annotation CSVs in `csv_dir` (files without the K400 columns are ignored)."""
    if not Path(csv_dir).is_dir():
        raise DataError(f"--annotations {csv_dir} is not a directory of Kinetics-400 annotation CSVs")
    rows = []
    for path in sorted(Path(csv_dir).glob("*.csv")):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if COLUMNS <= set(reader.fieldnames or []):
                rows += list(reader)
    if not rows:
        raise DataError(f"{csv_dir}: no CSV with columns label, {', '.join(sorted(COLUMNS))}")
    return rows


def scan(source: Path, rows: list[dict[str, str]]) -> tuple[dict[str, list[Clip]], dict[str, list[str]], int]:
    """(split → clips of the 31 classes whose file exists, skipped, unlabelled test rows)."""
    videos: dict[str, Path] = {}
    for path in sorted(source.rglob("*.mp4")):
        videos.setdefault(path.stem, path)
    splits: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    skipped: dict[str, list[str]] = {}
    seen, unlabelled = set(), 0
    for row in rows:
        split, label = SPLIT_NAMES.get(row["split"].strip()), (row.get("label") or "").strip()
        unlabelled += split == "test" and not label
        if split is None or label not in CLASSES or (name := clip_name(row)) in seen:
            continue
        seen.add(name)
        if name in videos:
            splits[split].append(Clip(name, CLASSES.index(label), videos[name], videos[name]))
        else:
            skipped.setdefault("missing video", []).append(name)
    return {s: sorted(clips, key=lambda c: c.id) for s, clips in splits.items()}, skipped, unlabelled


def make_splits(found: dict[str, list[Clip]], unlabelled: int, seed: int) -> tuple[dict, dict]:
    """The CSV's splits; if its test rows carry no labels, test is half of val (stratified, seeded)."""
    record = {"rule": "the CSV `split` column: train, val (validate), test", "seed": seed}
    if not found["test"]:
        labels = np.array([c.label for c in found["val"]])
        rest, held = stratified_holdout(labels, len(labels) // 2, seed)
        found = found | {"val": [found["val"][i] for i in rest], "test": [found["val"][i] for i in held]}
        record["test"] = (
            f"half of the CSV's val, stratified, seed {seed} ({unlabelled} test rows had no label)"
        )
    require_nonempty(found, "Kinetics-Sounds clips")
    return found, record


def prepare(source: Path | None, out: Path, opts: PrepareOptions | None = None) -> Manifest:
    """Raw Kinetics-400 + annotations → prepared `audio` (257×1003) and `video` (F×3×S×S uint8)."""
    opts = opts or PrepareOptions()
    check_options(NAME, OPTIONS, opts)
    source = require_source(NAME, source, LAYOUT)
    annotations = opts.annotations or source / "annotations"
    found, skipped, unlabelled = scan(source, read_annotations(annotations))
    plan, split_record = make_splits(found, unlabelled, SEED if opts.seed is None else opts.seed)
    frames = opts.frames or FRAMES
    video = VideoSpec(frames, opts.fps or FPS, opts.frame_size or FRAME_SIZE, min_frames=frames + 1)
    spec = AVSpec(AUDIO, video)
    preprocessing = {
        "classes": f"the {len(CLASSES)} Kinetics-Sounds classes of Kinetics-400, indexed by sorted name",
        "annotations": str(annotations),
        "audio": spec.audio.record() | {"source": "the clip's first audio stream (PyAV)"},
        "video": spec.video.record() | {"dropped": "clips with <= F frames at fps (the reference's rule)"},
        "split": split_record,
        "ids": "<split>/ids.txt, one clip name per line, in row order",
    }
    return prepare_clips(
        out, plan, spec, opts, dataset=NAME, classes=CLASSES,
        preprocessing=preprocessing, skipped=skipped, source=source,
    )  # fmt: skip
