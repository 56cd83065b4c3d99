"""A tiny untrained alignment model saved like ``sceneloc train --task align`` saves one."""

from __future__ import annotations

from pathlib import Path

import torch

from sceneloc.native.alignment import AlignmentConfig, AlignmentModel
from sceneloc.native.text import vocabulary_from_texts, word_tokenizer


def build_alignment(directory: Path, texts: list[str], proposer: str | None = None) -> Path:
    """``proposer``: as the config's (``None``: the bundled native-synth)."""
    tokenizer = word_tokenizer(vocabulary_from_texts(texts), max_length=16)
    config = AlignmentConfig(
        image_size=64, hidden_size=16, image_layers=1, text_layers=1, attention_heads=2,
        cnn_channels=[8, 16, 16, 16], vocab_size=len(tokenizer), max_text_length=16,
        proposer=proposer,
    )  # fmt: skip
    torch.manual_seed(0)
    AlignmentModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
