"""Optical flow of a clip's RGB frames with OpenCV: TV-L1 (contrib build) or Farneback.

Flow t is from frame t to frame t + 1 (grey, at the prepared size), in pixels, clipped to
[−bound, bound] and scaled to [−1, 1], then stored as uint8 q = round((f + 1) · 127.5)
(so f = q / 127.5 − 1, steps of 1/127.5 · bound ≈ 0.16 px for bound 20). A clip of F
frames has F − 1 flows; the last is repeated so that flow shares the frames' time grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

METHODS = ("tvl1", "farneback")
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2}
TVL1_GETTERS = ("Tau", "Lambda", "Theta", "ScalesNumber", "WarpingsNumber", "Epsilon", "InnerIterations")


@dataclass(frozen=True)
class FlowSpec:
    """Which flow, and how it is clipped."""

    method: str = "tvl1"
    bound: float = 20.0

    def record(self) -> dict[str, Any]:
        """Method, parameters and storage, for manifest.preprocessing."""
        import cv2

        params = FARNEBACK if self.method == "farneback" else tvl1_parameters()
        return {
            "method": self.method,
            "opencv": cv2.__version__,
            "parameters": params,
            "input": "consecutive frames of the prepared RGB window, converted to grey (BT.601)",
            "pairs": "flow t: frame t → t + 1; the last flow is a copy of the one before",
            "clip": [-self.bound, self.bound],
            "scale": f"f / {self.bound} → [-1, 1]",
            "layout": "(F, 2, H, W): channel 0 = x (right +), channel 1 = y (down +)",
            "dtype": "uint8, q = round((f + 1) * 127.5); f = q / 127.5 - 1",
        }


def tvl1_parameters() -> dict[str, float]:
    """The parameters of OpenCV's DualTVL1 as created (its defaults), read back from the object."""
    import cv2

    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    return {name: float(getattr(tvl1, f"get{name}")()) for name in TVL1_GETTERS}


def clip_flow(rgb: np.ndarray, spec: FlowSpec) -> np.ndarray:
    """uint8 (F, 3, H, W) frames → uint8 (F, 2, H, W) quantised flow."""
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from --jobs; OpenCV's own threads would compete
    grey = [cv2.cvtColor(np.ascontiguousarray(f.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY) for f in rgb]
    if spec.method == "tvl1":
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        flows = [tvl1.calc(a, b, None) for a, b in zip(grey[:-1], grey[1:], strict=True)]
    else:
        flows = [
            cv2.calcOpticalFlowFarneback(a, b, None, flags=0, **FARNEBACK)
            for a, b in zip(grey[:-1], grey[1:], strict=True)
        ]
    # the last flow repeated; a one-frame clip has no motion
    flows.append(flows[-1] if flows else np.zeros((*grey[0].shape, 2), np.float32))
    return quantise(np.stack(flows).transpose(0, 3, 1, 2), spec.bound)  # (F, 2, H, W)


def quantise(flow: np.ndarray, bound: float) -> np.ndarray:
    """Pixels → clipped to ±bound, scaled to [−1, 1], stored as uint8."""
    scaled = np.clip(flow, -bound, bound) / bound
    return np.round((scaled + 1.0) * 127.5).astype(np.uint8)


def dequantise(q: np.ndarray) -> np.ndarray:
    """uint8 storage → flow in [−1, 1] (units of `bound` pixels)."""
    return q.astype(np.float32) / 127.5 - 1.0
