"""Video → a few RGB frames: decoded with PyAV at a fixed rate, sampled deterministically, resized.

Replaces the reference's "first entries of an unsorted directory listing" (algorithm-notes
§2.7) with an explicit rule on frames in time order, recorded in the manifest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import MediaError

FPS_RULE = "1-fps frame k = the first decoded frame with time >= k / fps (time from the first frame)"
INDEX_RULE = "floor((i + 0.5) * n / F), i = 0..F-1: the centres of F equal segments of the n frames"
RESIZE_RULE = "squash to size x size, RGB24, FFmpeg swscale bilinear (PyAV VideoFrame.reformat)"


@dataclass(frozen=True)
class VideoSpec:
    """How many frames per clip, at which rate, at which size; clips with < min_frames are dropped."""

    frames: int
    fps: float = 1.0
    size: int = 224
    min_frames: int = 0  # 0 → `frames`

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(F, 3, H, W) of one clip."""
        return self.frames, 3, self.size, self.size

    @property
    def required(self) -> int:
        """The fewest frames at `fps` a clip must have."""
        return max(self.min_frames, self.frames)

    def record(self) -> dict[str, object]:
        """Every parameter, for manifest.preprocessing."""
        return {
            "fps": self.fps,
            "fps_rule": FPS_RULE,
            "frames": self.frames,
            "frame_indices": INDEX_RULE,
            "min_frames": self.required,
            "frame_size": self.size,
            "resize": RESIZE_RULE,
            "layout": "(F, 3, H, W) RGB",
            "dtype": "uint8",
        }


def sample_indices(n: int, frames: int) -> np.ndarray:
    """Sorted, distinct (for n >= frames) indices of the frames kept out of n."""
    return ((np.arange(frames) + 0.5) * n / frames).astype(np.int64)


def frames_at_fps(decoded: Iterable, fps: float, rate: float | None = None) -> list:
    """The decoded frames kept by the fixed-rate rule (FPS_RULE), in time order; streams its input."""
    kept, slot, origin = [], 0, None
    for i, frame in enumerate(decoded):
        # seconds from pts; frame count / stream rate when a frame has no pts
        t = float(frame.time) if frame.time is not None else i / (rate or 25.0)
        origin = t if origin is None else origin
        if t - origin >= slot / fps - 1e-6:
            kept.append(frame)
            slot = math.floor((t - origin) * fps + 1e-6) + 1
    return kept


def _to_rgb(frame, size: int) -> np.ndarray:
    rgb = frame.reformat(width=size, height=size, format="rgb24", interpolation="BILINEAR")
    return rgb.to_ndarray().transpose(2, 0, 1)  # (3, S, S)


def sampled_frames(path: Path, spec: VideoSpec) -> np.ndarray:
    """The prepared video of one file: uint8 `spec.shape`; MediaError if unusable."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError("corrupt video", f"{Path(path).name} has no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate) if stream.average_rate else None
            slots = frames_at_fps(container.decode(stream), spec.fps, rate)
            if len(slots) < spec.required:
                raise MediaError("too few frames", f"{len(slots)} at {spec.fps} fps, need {spec.required}")
            return np.stack([_to_rgb(slots[i], spec.size) for i in sample_indices(len(slots), spec.frames)])
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as e:
        raise MediaError("corrupt video", f"{Path(path).name}: {str(e).splitlines()[0]}") from None
