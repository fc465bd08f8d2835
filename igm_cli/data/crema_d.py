"""CREMA-D (audio + video, 6 emotions) from the official layout: AudioWAV/<id>.wav, VideoFlash/<id>.flv.

Audio as the IGM reference (22,050 Hz, 3 s, STFT 512/353 → 257×188 log magnitude); frames
at 1 fps, sampled by an explicit rule (video.py). Splits: the papers' random 744-clip test
(stratified, seeded), a published `id,EMO` test list, or held-out actors; validation is
carved from train the same way (datasets.md).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from .audio import AudioSpec
from .base import PrepareOptions, check_options, require_source
from .clips import AVSpec, Clip, prepare_clips
from .manifest import Manifest
from .splits import group_holdout, holdout_size, require_nonempty, stratified_holdout
from .video import VideoSpec

NAME = "crema-d"
MODALITIES = ("audio", "video")
OPTIONS = frozenset({"frames", "fps", "frame_size", "seed", "split_file", "speaker_independent"})
CLASSES = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]  # the literature's order
CLIP_ID = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")
TEST_FRACTION = 744 / 7442  # the papers' 6,698 / 744 split of the 7,442 clips
VAL_FRACTION = 0.1  # of what remains after the test split
SEED, FRAMES, FPS, FRAME_SIZE = 42, 1, 1.0, 224
AUDIO = AudioSpec(sample_rate=22_050, seconds=3.0)
LAYOUT = "the CREMA-D repository with AudioWAV/<id>.wav and VideoFlash/<id>.flv"


def parse_id(clip_id: str) -> tuple[str, int] | None:
    """(actor, class index) of a clip id such as 1001_DFA_ANG_XX; None if it is not one."""
    match = CLIP_ID.match(clip_id)
    if match is None or match["emotion"] not in CLASSES:
        return None
    return match["actor"], CLASSES.index(match["emotion"])


def scan(source: Path) -> tuple[list[Clip], dict[str, list[str]]]:
    """Every clip with both files, sorted by id; the others by skip reason."""
    audio_dir, video_dir = source / "AudioWAV", source / "VideoFlash"
    if not audio_dir.is_dir() or not video_dir.is_dir():
        raise DataError(f"{source} is not a CREMA-D download: expected {LAYOUT}")
    wavs = {p.stem: p for p in audio_dir.glob("*.wav")}
    flvs = {p.stem: p for p in video_dir.glob("*.flv")}
    if not wavs and not flvs:
        raise DataError(f"{source}: no .wav in AudioWAV/ and no .flv in VideoFlash/ (git lfs pull?)")
    clips, skipped = [], {}
    for clip_id in sorted(wavs.keys() | flvs.keys()):
        parsed = parse_id(clip_id)
        reason = (
            "bad id" if parsed is None
            else "missing audio" if clip_id not in wavs
            else "missing video" if clip_id not in flvs
            else None
        )  # fmt: skip
        if reason:
            skipped.setdefault(reason, []).append(clip_id)
        else:
            clips.append(Clip(clip_id, parsed[1], wavs[clip_id], flvs[clip_id]))
    return clips, skipped


def read_split_file(path: Path) -> dict[str, int]:
    """Clip id → class index from a published `id,EMO` list (no header, like OGM-GE's test.csv)."""
    if not Path(path).is_file():
        raise DataError(f"--split-file {path} does not exist")
    rows = {}
    with open(path, newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            parsed = parse_id(row[0].strip()) if len(row) >= 2 else None
            if parsed is None or CLASSES[parsed[1]] != row[1].strip():
                raise DataError(f"{path}:{line}: expected `<clip id>,<its emotion>`, got {','.join(row)!r}")
            rows[row[0].strip()] = parsed[1]
    if not rows:
        raise DataError(f"--split-file {path} lists no clips")
    return rows


def _holdout(clips: list[Clip], fraction: float, seed: int, by_actor: bool) -> tuple[list, list, dict]:
    """(rest, held, record): hold out a fraction of the clips (stratified) or of the actors."""
    labels = np.array([c.label for c in clips])
    if by_actor:
        actors = np.array([c.id[:4] for c in clips])
        n = holdout_size(len(set(actors.tolist())), fraction)
        rest, held, chosen = group_holdout(actors, n, seed)
        record = {"actors": chosen}
    else:
        rest, held = stratified_holdout(labels, holdout_size(len(clips), fraction), seed)
        record = {}
    return [clips[i] for i in rest], [clips[i] for i in held], record


def make_splits(clips: list[Clip], opts: PrepareOptions, skipped: dict) -> tuple[dict, dict]:
    """({train, val, test} → clips, the split record for the manifest)."""
    seed = SEED if opts.seed is None else opts.seed
    by_actor = opts.speaker_independent
    record = {"seed": seed, "val_fraction": VAL_FRACTION, "val_from": "train"}
    if opts.split_file is not None:
        listed = read_split_file(opts.split_file)
        found = {c.id for c in clips}
        unknown = sorted(set(listed) - found - {i for ids in skipped.values() for i in ids})
        skipped.setdefault("not in source", []).extend(unknown)
        test, train = [c for c in clips if c.id in listed], [c for c in clips if c.id not in listed]
        record |= {"mode": "file", "split_file": str(opts.split_file), "test": "the clips listed in it"}
    else:
        train, test, held = _holdout(clips, TEST_FRACTION, seed, by_actor)
        record |= {"mode": "speaker-independent" if by_actor else "random", "test_fraction": TEST_FRACTION}
        record["test_size"] = "round(clips found × 744/7442), at least 1 (744 of the full 7,442)"
        record |= {f"test_{k}": v for k, v in held.items()}
    train, val, held = _holdout(train, VAL_FRACTION, seed, by_actor)
    record |= {f"val_{k}": v for k, v in held.items()}
    record["stratified"] = not by_actor
    record["grouped_by"] = "actor" if by_actor else None
    plan = {"train": train, "val": val, "test": test}
    require_nonempty(plan, "clips")
    return plan, record


def prepare(source: Path | None, out: Path, opts: PrepareOptions | None = None) -> Manifest:
    """Raw CREMA-D → prepared `audio` (257×188 float32) and `video` (F×3×S×S uint8)."""
    opts = opts or PrepareOptions()
    check_options(NAME, OPTIONS, opts)
    source = require_source(NAME, source, LAYOUT)
    clips, skipped = scan(source)
    plan, split_record = make_splits(clips, opts, skipped)
    frames = opts.frames or FRAMES
    spec = AVSpec(AUDIO, VideoSpec(frames, opts.fps or FPS, opts.frame_size or FRAME_SIZE))
    preprocessing = {
        "labels": "emotion code of the clip id <actor>_<sentence>_<emotion>_<level>",
        "audio": spec.audio.record() | {"source": "AudioWAV/<id>.wav"},
        "video": spec.video.record() | {"source": "VideoFlash/<id>.flv"},
        "split": split_record,
        "ids": "<split>/ids.txt, one clip id per line, in row order",
    }
    return prepare_clips(
        out, plan, spec, opts, dataset=NAME, classes=CLASSES,
        preprocessing=preprocessing, skipped=skipped, source=source,
    )  # fmt: skip
