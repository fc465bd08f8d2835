"""Still images of the text–image datasets, decoded once at prepare time with Pillow.

Each image becomes RGB, its short side resized to S (bicubic), then the centre S×S crop,
stored (3, S, S) uint8; training crops 224 from it on the device (models/inputs.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import MediaError


@dataclass(frozen=True)
class ImageSpec:
    """Stored image side S (short side resized to S, centre crop S×S)."""

    size: int = 256

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-image stored shape (3, S, S)."""
        return (3, self.size, self.size)

    def record(self) -> dict[str, Any]:
        """The image facts written into the manifest."""
        return {
            "decoder": "Pillow",
            "mode": "RGB (palette, grey and CMYK converted; alpha dropped)",
            "resize": f"short side to {self.size}, bicubic (Image.Resampling.BICUBIC)",
            "crop": f"centre {self.size}x{self.size}",
            "stored": f"image.npy (U, 3, {self.size}, {self.size}) uint8, one row per distinct image; "
            "image.rows.npy maps each sample to its row",
        }


def decode_image(path: Path, spec: ImageSpec) -> np.ndarray:
    """(3, S, S) uint8 of one image file; MediaError('missing image'|'corrupt image') otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise MediaError("missing image", str(path))
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = spec.size / min(w, h)
            size = (max(spec.size, round(w * scale)), max(spec.size, round(h * scale)))
            img = img.resize(size, Image.Resampling.BICUBIC)
            left, top = (size[0] - spec.size) // 2, (size[1] - spec.size) // 2
            img = img.crop((left, top, left + spec.size, top + spec.size))
            return np.ascontiguousarray(np.asarray(img, np.uint8).transpose(2, 0, 1))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise MediaError("corrupt image", f"{path}: {e}") from None


def decode_item(item: Any, spec: ImageSpec) -> dict[str, np.ndarray] | tuple[str, str]:
    """Worker: {'image': array} of an item with a `.path`, or (reason, detail)."""
    try:
        return {"image": decode_image(item.path, spec)}
    except MediaError as e:
        return e.reason, str(e)
