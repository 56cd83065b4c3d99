"""The native, trainable two-stream grounding model (image encoder, text encoder, fusion)."""

from sceneloc.native.config import NativeConfig
from sceneloc.native.model import NativeGroundingModel, NativeOutput

__all__ = ["NativeConfig", "NativeGroundingModel", "NativeOutput"]
