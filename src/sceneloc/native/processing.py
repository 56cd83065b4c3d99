"""Turning images and queries into model inputs, and model outputs into pixel boxes.

Shared by the backend (inference) and training, so both see exactly the same inputs.
Images are resized to the model's square input (not padded): boxes are normalised to the
image's sides, so they map back to any aspect ratio exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from sceneloc.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from sceneloc.native.config import NativeConfig


def resize(image: Image.Image, size: int) -> np.ndarray:
    """``(3, size, size)`` uint8 pixels of an RGB image."""
    resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).copy()


def normalize(pixels: torch.Tensor, config: NativeConfig) -> torch.Tensor:
    """uint8 ``(batch, 3, h, w)`` to the float input of the image encoder."""
    mean = torch.tensor(config.image_mean, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(config.image_std, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


def tokenize(
    tokenizer: PreTrainedTokenizerBase, queries: list[str], config: NativeConfig
) -> dict[str, torch.Tensor]:
    """Token ids and mask; a query with no words at all reads as one unknown word.

    Without that, a word-level tokenizer would give such a query a fully padded row, which
    attention cannot read (and which would make its answer depend on its neighbours).
    """
    encoded = tokenizer(
        queries,
        padding=True,
        truncation=True,
        max_length=config.max_text_length,
        return_tensors="pt",
    )
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    if ids.shape[1] == 0:
        ids = torch.zeros(len(queries), 1, dtype=torch.long)
        mask = torch.zeros(len(queries), 1, dtype=torch.long)
    empty = mask.sum(dim=1) == 0
    unknown = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    ids[empty, 0], mask[empty, 0] = unknown, 1
    return {"input_ids": ids, "attention_mask": mask}


def to_normalized(box: Sequence[float], width: int, height: int) -> list[float]:
    """Pixel ``[x1, y1, x2, y2]`` to the model's normalised ``[cx, cy, w, h]``."""
    return (xyxy_to_cxcywh(box) / np.array([width, height, width, height])).tolist()


def to_pixels(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """The model's normalised ``(n, 4)`` ``[cx, cy, w, h]`` to pixel ``[x1, y1, x2, y2]``."""
    return cxcywh_to_xyxy(boxes) * np.array([width, height, width, height])
