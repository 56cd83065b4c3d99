"""A tiny untrained native describer saved like ``sceneloc train --task describe`` saves one."""

from __future__ import annotations

from pathlib import Path

import torch

from sceneloc.native.describer import BOS_TOKEN, EOS_TOKEN, DescriberConfig, NativeDescriberModel
from sceneloc.native.text import vocabulary_from_texts, word_tokenizer

CAPTIONS = ["the red square", "the leftmost green circle", "the small blue triangle"]


def build_native_describer(
    directory: Path, captions: list[str] = CAPTIONS, listed_objects: bool = True
) -> Path:
    """``listed_objects``: trained on scenes that list their objects (attribute heads and an
    object map), as on synthetic scenes."""
    tokenizer = word_tokenizer(
        [BOS_TOKEN, EOS_TOKEN, *vocabulary_from_texts(captions)], max_length=16
    )
    bos, eos = tokenizer.convert_tokens_to_ids([BOS_TOKEN, EOS_TOKEN])
    config = DescriberConfig(
        image_size=64, hidden_size=16, image_layers=1, region_layers=1, attention_heads=2,
        cnn_channels=[8, 16, 16, 16], vocab_size=len(tokenizer), bos_token_id=bos,
        eos_token_id=eos, max_caption_length=16,
        object_attributes={"color": ["blue", "green", "red"], "shape": ["circle", "square"]}
        if listed_objects else None,
    )  # fmt: skip
    torch.manual_seed(0)
    NativeDescriberModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
