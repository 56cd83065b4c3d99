"""A tiny untrained native model, in memory or saved like ``sceneloc train`` saves one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from sceneloc.native import NativeConfig, NativeGroundingModel
from sceneloc.native.text import vocabulary_from_texts, word_tokenizer


def tiny_native(
    texts: list[str], fusion: str = "cross-attention", **config: Any
) -> tuple[NativeGroundingModel, PreTrainedTokenizerFast]:
    """The model (``config`` overrides its settings) and a tokenizer of the words of ``texts``."""
    tokenizer = word_tokenizer(vocabulary_from_texts(texts), max_length=16)
    settings = {
        "fusion": fusion, "image_size": 64, "hidden_size": 16, "fusion_layers": 1,
        "image_layers": 1, "text_layers": 1, "attention_heads": 2,
        "cnn_channels": [8, 16, 16, 16], "vocab_size": len(tokenizer), "max_text_length": 16,
        **config,
    }  # fmt: skip
    torch.manual_seed(0)
    return NativeGroundingModel(NativeConfig(**settings)), tokenizer


def build_native(directory: Path, texts: list[str], fusion: str = "cross-attention") -> Path:
    model, tokenizer = tiny_native(texts, fusion)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
