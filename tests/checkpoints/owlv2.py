"""A randomly initialised OWLv2 checkpoint on disk, sharing the tiny CLIP vocabulary."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2ImageProcessorPil,
    Owlv2Processor,
)

from checkpoints.clip import clip_tokenizer, text_config

#: OWLv2's text tower reads at most 16 tokens, start and end included.
MAX_TEXT_LENGTH = 16


def build_owlv2(directory: Path, seed: int = 0) -> Path:
    """Save a tiny OWLv2 (96 px padded square, 6x6 patches) with its processor."""
    vision = dict(
        image_size=96, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2,
    )  # fmt: skip
    config = Owlv2Config(
        text_config=text_config(MAX_TEXT_LENGTH), vision_config=vision, projection_dim=32
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    with torch.no_grad():
        # Shrink the patch features the heads read, so random boxes have a size and random
        # scores spread over (0, 1) instead of saturating.
        model.layer_norm.weight.mul_(0.03)
        model.layer_norm.bias.mul_(0.03)
    model.save_pretrained(directory)
    image_processor = Owlv2ImageProcessorPil(size={"height": 96, "width": 96})
    # OWLv2 pads its queries with "!" (id 0), as the released checkpoints do.
    tokenizer = clip_tokenizer(MAX_TEXT_LENGTH, pad_token="!")
    Owlv2Processor(image_processor, tokenizer).save_pretrained(directory)
    return directory
