"""Randomly initialised SAM 3 and SAM3-LiteText checkpoints on disk, over the tiny CLIP vocabulary.

The image processor's settings are written as ``Sam3ImageProcessor.save_pretrained`` writes
them (that class needs torchvision, which these tests must do without), so transformers'
own processor reads them where torchvision works.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    Sam3Config,
    Sam3LiteTextConfig,
    Sam3LiteTextModel,
    Sam3Model,
    Sam3VisionConfig,
    Sam3ViTConfig,
)

from checkpoints.clip import clip_tokenizer, text_config

#: The model's square input: 16 x 16 patches of 14 pixels, two windows of 8 a side.
IMAGE_SIZE = 224
#: Tokens ``Sam3Processor`` pads every prompt to.
TEXT_LENGTH = 32


def sam3_configs() -> dict:
    """The parts both models share: vision tower, DETR encoder and decoder, mask decoder."""
    backbone = Sam3ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=14, window_size=8, global_attn_indexes=[0, 1],
    )  # fmt: skip
    layers = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_layers=1)
    return dict(
        vision_config=Sam3VisionConfig(
            backbone_config=backbone, fpn_hidden_size=32, scale_factors=[2.0, 1.0]
        ),
        geometry_encoder_config=layers,
        detr_encoder_config=layers,
        detr_decoder_config=layers | {"num_queries": 6},
        mask_decoder_config=dict(hidden_size=32, num_upsampling_stages=2, num_attention_heads=4),
    )


def build_sam3(directory: Path, lite: bool = False, seed: int = 0) -> Path:
    """Save a tiny SAM 3 (``lite``: SAM3-LiteText) with its tokenizer and image processor."""
    tower = text_config(TEXT_LENGTH) | {"projection_dim": 32}
    torch.manual_seed(seed)
    if lite:
        shared = ("vocab_size", "hidden_size", "intermediate_size", "projection_dim",
                  "num_attention_heads", "max_position_embeddings")  # fmt: skip
        lite_tower = {key: tower[key] for key in shared}
        config = Sam3LiteTextConfig(
            text_config=lite_tower | {"num_hidden_layers": 2}, **sam3_configs()
        )
        model = Sam3LiteTextModel(config)
    else:
        model = Sam3Model(Sam3Config(text_config=tower, **sam3_configs()))
    return save_sam3(model, directory, IMAGE_SIZE)


def save_sam3(model: Sam3Model | Sam3LiteTextModel, directory: Path, image_size: int) -> Path:
    """Save ``model`` with the tiny CLIP tokenizer and an image processor for ``image_size``."""
    model.eval().save_pretrained(directory)
    clip_tokenizer(TEXT_LENGTH).save_pretrained(directory)
    image_processor = {
        "image_processor_type": "Sam3ImageProcessor",
        "processor_class": "Sam3Processor",
        "size": {"height": image_size, "width": image_size},
        "do_resize": True,
        "resample": 2,  # bilinear
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(image_processor, indent=2))
    return directory
