"""A randomly initialised OmDet-Turbo checkpoint on disk, with transformers' Swin (not timm's).

The released checkpoint's vision backbone is timm's Swin-T; timm is not installed here, so
the tiny one uses transformers' own Swin backbone, as transformers' tests do. Its image
processor is the released one's kind (``DetrImageProcessor``: a plain resize to a square,
mean and standard deviation on the 0-255 scale, no rescaling, no padding) at 96 px, and its
tokenizer the tiny CLIP vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    DetrImageProcessorPil,
    OmDetTurboConfig,
    OmDetTurboForObjectDetection,
)
from transformers.models.omdet_turbo.processing_omdet_turbo import OmDetTurboProcessor

from checkpoints.clip import clip_tokenizer, text_config

#: The processor pads and cuts every class name and task sentence to CLIP's 77 tokens.
TEXT_LENGTH = 77
#: The released image processor's normalisation, on the 0-255 scale (it does not rescale).
IMAGE_MEAN = [123.675, 116.28, 103.53]
IMAGE_STD = [58.395, 57.12, 57.375]


def image_processor(side: int) -> DetrImageProcessorPil:
    """The released checkpoint's image processor, resizing to ``side`` x ``side``."""
    return DetrImageProcessorPil(
        size={"height": side, "width": side}, do_rescale=False, image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD, do_pad=False,
    )  # fmt: skip


def processor(directory: Path) -> OmDetTurboProcessor:
    """transformers' own processor over the checkpoint's image processor and tokenizer.

    Taken from its module: transformers' top level hides it without torchvision, which only
    its post-processing uses (for ``batched_nms``); making inputs does not need it.
    """
    return OmDetTurboProcessor(
        DetrImageProcessorPil.from_pretrained(directory), AutoTokenizer.from_pretrained(directory)
    )


def build_omdet_turbo(directory: Path, seed: int = 0) -> Path:
    """Save a tiny OmDet-Turbo (96 px, a 1-1-1-1 Swin, 30 queries) with its processor's parts."""
    backbone = dict(
        model_type="swin", image_size=96, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
        window_size=4, out_indices=[2, 3, 4],
    )  # fmt: skip
    config = OmDetTurboConfig(
        backbone_config=backbone, text_config=text_config(TEXT_LENGTH),
        # transformers' Swin backbone normalises its own feature maps (timm's does not).
        apply_layernorm_after_vision_backbone=False, image_size=96,
        encoder_in_channels=[16, 32, 64], encoder_hidden_dim=16, encoder_layers=1,
        encoder_attention_heads=2, encoder_dim_feedforward=32,
        vision_features_channels=[16, 16, 16], decoder_hidden_dim=16, decoder_num_heads=2,
        decoder_num_layers=2, decoder_num_points=2, decoder_dim_feedforward=32,
        task_encoder_hidden_dim=32, class_embed_dim=32, text_projection_in_dim=32,
        text_projection_out_dim=32, num_queries=30,
        # Wider than the default 0.02, so random scores spread over (0, 1) instead of
        # sitting close together for every box.
        init_std=0.15,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = OmDetTurboForObjectDetection(config).eval()
    with torch.no_grad():
        # The box heads start at zero, which leaves every box on its small anchor; random
        # ones, the first growing its anchors' sides, give boxes of varied sizes that
        # overlap, so NMS has work to do.
        heads = [model.decoder.encoder_bbox_head, *model.decoder.decoder_bbox_head]
        for head in heads:
            head.layers[-1].weight.normal_(std=0.5)
            head.layers[-1].bias.normal_(std=0.5)
        model.decoder.encoder_bbox_head.layers[-1].bias[2:] += 2.0
    model.save_pretrained(directory)
    image_processor(96).save_pretrained(directory)
    clip_tokenizer(TEXT_LENGTH).save_pretrained(directory)
    return directory
