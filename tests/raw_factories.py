"""Writers of tiny raw datasets in the real formats and layouts (reference/datasets.md).

Used by the data tests, the README test, the train tests and bench/data_pipeline.py. Frame
i of every generated video is a flat grey of `frame_value(i)` (plus optional texture), so a
test can tell which source frames were sampled.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CREMA_D_CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
KS_HEADER = ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"]


def frame_value(i: int) -> int:
    """The grey level of source frame i (distinct for i < 48)."""
    return (10 + 5 * i) % 250


def write_wav(path: Path, seconds: float, sample_rate: int = 16_000, freq: float = 440.0, seed: int = 0):
    """A mono 16-bit PCM wav (as CREMA-D's); returns the samples as read back (float32 in [-1, 1))."""
    import soundfile

    t = np.arange(round(seconds * sample_rate)) / sample_rate
    noise = np.random.default_rng(seed).normal(0, 0.02, t.size)
    y = (0.4 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, y, sample_rate, subtype="PCM_16")
    return soundfile.read(path, dtype="float32")[0]


def _frames(count: int, size: tuple[int, int], texture: bool, seed: int):
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(count):
        img = np.full((h, w, 3), frame_value(i), np.int16)
        if texture:  # camera-like detail so the encoder and decoder do real work (bench)
            img += rng.integers(-20, 21, (h, w, 1), dtype=np.int16)
        yield np.clip(img, 0, 255).astype(np.uint8)


def write_video(
    path: Path,
    *,
    frames: int,
    fps: int = 10,
    size: tuple[int, int] = (32, 24),
    container: str = "flv",
    codec: str = "flv",
    audio_seconds: float | None = None,
    audio_freq: float = 1000.0,
    texture: bool = False,
    seed: int = 0,
) -> None:
    """A video file written with PyAV; with `audio_seconds`, an AAC 44.1 kHz stereo track too."""
    import av

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container) as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        video.bit_rate = 4_000_000  # near-lossless, so frame_value(i) survives encoding
        sound = out.add_stream("aac", rate=44_100, layout="stereo") if audio_seconds else None
        for img in _frames(frames, size, texture, seed):
            out.mux(video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(video.encode())
        if sound is not None:
            t = np.arange(round(audio_seconds * 44_100)) / 44_100
            y = np.tile(0.3 * np.sin(2 * np.pi * audio_freq * t).astype(np.float32), (2, 1))
            frame = av.AudioFrame.from_ndarray(y, format="fltp", layout="stereo")
            frame.sample_rate = 44_100
            out.mux(sound.encode(frame))
            out.mux(sound.encode())


def write_garbage(path: Path, size: int = 3000, seed: int = 0) -> None:
    """Bytes no decoder accepts, under a media file name."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"\x00garbage" + np.random.default_rng(seed).bytes(size))


@dataclass
class RawCremaD:
    """What make_crema_d wrote."""

    root: Path
    ids: list[str]  # clips with both files intact
    corrupt: str | None  # id whose .flv is garbage
    bad_id: str | None  # a file name that is not a clip id
    samples: dict[str, np.ndarray] = field(default_factory=dict)  # id → waveform as written


def make_crema_d(
    root: Path,
    *,
    actors: tuple[int, ...] = (1001, 1002, 1003, 1004, 1005),
    sentences: tuple[str, ...] = ("DFA",),
    emotions: tuple[str, ...] = CREMA_D_CLASSES,
    seconds: float = 1.2,
    sample_rate: int = 16_000,
    video_seconds: float = 2.5,
    fps: int = 10,
    size: tuple[int, int] = (32, 24),
    codec: str = "flv",
    texture: bool = False,
    corrupt: bool = True,
    bad_id: bool = True,
) -> RawCremaD:
    """CREMA-D's layout: AudioWAV/<id>.wav (16 kHz mono PCM) and VideoFlash/<id>.flv."""
    root = Path(root)
    ids = [f"{a}_{s}_{e}_XX" for a in actors for s in sentences for e in emotions]
    raw = RawCremaD(root, ids, ids[-1] if corrupt else None, None)
    for n, clip_id in enumerate(ids):
        freq = 200.0 + 100 * emotions.index(clip_id.split("_")[2])
        raw.samples[clip_id] = write_wav(root / "AudioWAV" / f"{clip_id}.wav", seconds, sample_rate, freq, n)
        flv = root / "VideoFlash" / f"{clip_id}.flv"
        if clip_id == raw.corrupt:
            write_garbage(flv, seed=n)
        else:
            write_video(
                flv, frames=round(video_seconds * fps), fps=fps, size=size, codec=codec, texture=texture
            )
    if bad_id:
        raw.bad_id = "README_copy"
        write_wav(root / "AudioWAV" / f"{raw.bad_id}.wav", 0.2, sample_rate)
    return raw


@dataclass
class RawKinetics:
    """What make_kinetics_sounds wrote."""

    root: Path
    annotations: Path
    clips: dict[str, list[str]]  # split → names of the intact, long-enough clips
    labels: dict[str, str]  # clip name → class
    missing: str = ""
    corrupt: str = ""
    short: str = ""


def make_kinetics_sounds(
    root: Path,
    *,
    classes: tuple[str, ...] = ("bowling", "playing drums", "tapping pen"),
    per_split: tuple[tuple[str, int], ...] = (("train", 2), ("val", 2), ("test", 1)),
    seconds: float = 4.5,
    fps: int = 10,
    size: tuple[int, int] = (32, 24),
    test_labels: bool = True,
) -> RawKinetics:
    """K400's layout: <split>/<youtube_id>_<start:06d>_<end:06d>.mp4 plus annotations/*.csv.

    Adds one clip of a class outside Kinetics-Sounds, one row whose file is missing, one
    corrupt file and one clip too short for 3 frames at 1 fps (all in train).
    """
    root = Path(root)
    raw = RawKinetics(root, root / "annotations", {s: [] for s, _ in per_split}, {})
    rows: dict[str, list[list]] = {s: [] for s, _ in per_split}
    for c, label in enumerate((*classes, "abseiling")):  # abseiling: a K400 class outside KS
        for split, count in per_split:
            for i in range(count if label in classes else 1):
                name, row = _ks_row(label, split, c, i)
                rows[split].append(row)
                write_video(root / split / f"{name}.mp4", frames=round(seconds * fps), fps=fps, size=size,
                            container="mp4", codec="libx264", audio_seconds=seconds)  # fmt: skip
                if label in classes:
                    raw.clips[split].append(name)
                    raw.labels[name] = label
    extra = [_ks_row(classes[0], "train", 90 + k, 0) for k in range(3)]
    raw.missing, raw.corrupt, raw.short = (name for name, _ in extra)
    rows["train"] += [row for _, row in extra]
    write_garbage(root / "train" / f"{raw.corrupt}.mp4")
    write_video(root / "train" / f"{raw.short}.mp4", frames=round(2.5 * fps), fps=fps, size=size,
                container="mp4", codec="libx264", audio_seconds=2.5)  # fmt: skip
    _write_ks_csvs(raw.annotations, rows, test_labels)
    return raw


def _ks_row(label: str, split: str, c: int, i: int) -> tuple[str, list]:
    youtube_id = f"k{c:02d}{split[:2]}{i}_x-yz"  # 11 characters, like YouTube ids
    start = 10 * i + 3
    return f"{youtube_id}_{start:06d}_{start + 10:06d}", [label, youtube_id, start, start + 10, split, 0]


def _write_ks_csvs(folder: Path, rows: dict[str, list[list]], test_labels: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        name = {"val": "validate"}.get(split, split)
        with open(folder / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            if split == "test" and not test_labels:  # the original K400 test.csv has no label column
                writer.writerow(KS_HEADER[1:5])
                writer.writerows(row[1:5] for row in split_rows)
            else:
                writer.writerow(KS_HEADER)
                writer.writerows(split_rows)
