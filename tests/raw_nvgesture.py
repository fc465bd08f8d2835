"""A tiny raw NVGesture in the real layout: Video_data/class_XX/subjectYY_rZ/sk_{color,depth}.avi + lists.

Videos are written with PyAV (MPEG-4 in AVI). Frame i of the colour video is a flat grey of
`frame_value(i)` with a bright square moving right by `STEP` px per frame; the depth video
is the same square on black, so a test can tell which frames and which sensor were read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.raw_factories import frame_value

STEP = 2
TRAIN_LIST = "nvgesture_train_correct_cvpr2016_v2.lst"
TEST_LIST = "nvgesture_test_correct_cvpr2016_v2.lst"


def gesture_frames(count: int, size: tuple[int, int], depth: bool, offset: int = 0) -> list[np.ndarray]:
    """uint8 (H, W, 3) frames: grey level frame_value(i) (black for depth), a square moving right."""
    w, h = size
    frames = []
    for i in range(count):
        img = np.full((h, w, 3), 0 if depth else frame_value(i), np.uint8)
        x = (offset + STEP * i) % (w - 8)
        img[h // 2 - 4 : h // 2 + 4, x : x + 8] = 240
        frames.append(img)
    return frames


def write_avi(path: Path, frames: list[np.ndarray], fps: int = 30) -> None:
    """An MPEG-4 .avi with PyAV, at a high bit rate so grey levels survive."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.bit_rate = 4_000_000
        for img in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())


def list_line(rel: str, label: int, window: tuple[int, int]) -> str:
    """One line in the official format (label 1-based; duo_left is listed but not used)."""
    s, e = window
    sensors = f"depth:sk_depth:{s}:{e} color:sk_color:{s}:{e} duo_left:duo_left:{s + 1}:{e + 1}"
    return f"path:./{rel} {sensors} label:{label}"


@dataclass
class RawNvGesture:
    """What make_nvgesture wrote."""

    root: Path
    lists: Path
    train: list[str] = field(default_factory=list)  # clip paths that decode fine
    test: list[str] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)  # clip path → 0-based class
    past_end: str = ""  # a train line whose window runs past the video's end
    missing: str = ""  # a test line whose folder does not exist


def make_nvgesture(
    root: Path,
    *,
    classes: int = 3,
    per_class: tuple[int, int] = (5, 2),
    frames: int = 12,
    window: tuple[int, int] = (2, 10),
    size: tuple[int, int] = (32, 24),
    lists_inside: bool = True,
) -> RawNvGesture:
    """Video_data/class_XX/subjectYY_rZ with both sensors, and the two lists (under root or beside it)."""
    root = Path(root)
    lists = root if lists_inside else root.parent / "lists"
    raw = RawNvGesture(root, lists)
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for c in range(1, classes + 1):
        for split, count in zip(("train", "test"), per_class, strict=True):
            for k in range(count):
                subject = k + 1 if split == "train" else 20 + k
                rel = f"Video_data/class_{c:02d}/subject{subject}_r{c % 3}"
                for name, depth in (("sk_color.avi", False), ("sk_depth.avi", True)):
                    write_avi(root / rel / name, gesture_frames(frames, size, depth, offset=c + k))
                lines[split].append(list_line(rel, c, window))
                getattr(raw, split).append(rel)
                raw.labels[rel] = c - 1
    raw.past_end = "Video_data/class_01/subject9_r1"
    for name, depth in (("sk_color.avi", False), ("sk_depth.avi", True)):
        write_avi(root / raw.past_end / name, gesture_frames(frames, size, depth))
    lines["train"].append(list_line(raw.past_end, 1, (window[0], frames + 5)))
    raw.missing = "Video_data/class_02/subject99_r0"
    lines["test"].append(list_line(raw.missing, 2, window))
    lists.mkdir(parents=True, exist_ok=True)
    (lists / TRAIN_LIST).write_text("\n".join(lines["train"]) + "\n")
    (lists / TEST_LIST).write_text("\n".join(lines["test"]) + "\n")
    return raw
