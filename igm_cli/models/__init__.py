"""Models: encoder registry, heads, and the late-fusion model."""

from .encoders import ENCODERS, build_encoder
from .fusion_model import Branch, LateFusionModel, build_model
from .heads import build_head

__all__ = ["ENCODERS", "Branch", "LateFusionModel", "build_encoder", "build_head", "build_model"]
