"""Randomly initialised OmDet-Turbo checkpoints on disk: with transformers' Swin, and with
timm's Swin laid out as in the released checkpoint.

The released checkpoint's vision backbone is timm's Swin-T; timm cannot be installed here, so
the timm one is written by hand: timm's weight names (:mod:`checkpoints.timm_swin`) and the
released config.json's way of naming the backbone. Their image processor is the released
one's kind (``DetrImageProcessor``: a plain resize to a square, mean and standard deviation
on the 0-255 scale, no rescaling, no padding) at 96 px, and their tokenizer the tiny CLIP
vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer,
    DetrImageProcessorPil,
    OmDetTurboConfig,
    OmDetTurboForObjectDetection,
)
from transformers.models.omdet_turbo.processing_omdet_turbo import OmDetTurboProcessor

from checkpoints.clip import clip_tokenizer, text_config
from checkpoints.timm_swin import timm_swin_weights

#: The processor pads and cuts every class name and task sentence to CLIP's 77 tokens.
TEXT_LENGTH = 77
#: The released image processor's normalisation, on the 0-255 scale (it does not rescale).
IMAGE_MEAN = [123.675, 116.28, 103.53]
IMAGE_STD = [58.395, 57.12, 57.375]
#: The timm Swin of the timm checkpoint: Swin-T's window, out_indices and layout, smaller.
TIMM_SWIN = dict(embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window=7)
TIMM_OUT_INDICES = [1, 2, 3]
#: Where the released checkpoint keeps timm's Swin (transformers' ``TimmBackbone._backbone``).
TIMM_PREFIX = "vision_backbone.vision_backbone._backbone."


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
    # transformers' Swin backbone normalises its own feature maps (timm's does not).
    model = _random_model(_config(backbone, apply_layernorm_after_vision_backbone=False), seed)
    model.save_pretrained(directory)
    _save_processor(directory)
    return directory


def build_omdet_turbo_timm(directory: Path, seed: int = 0) -> Path:
    """Save a tiny OmDet-Turbo whose backbone is timm's Swin, as the released checkpoint's is:
    its config.json names timm's Swin-T by ``backbone`` and ``backbone_kwargs`` (the weights
    are a smaller Swin of the same window and layout), its weights sit under timm's names,
    and OmDet-Turbo's own layer norms normalise timm's feature maps."""
    # A backbone to build the model with; its weights are replaced by timm's.
    stand_in = dict(model_type="swin", image_size=96, embed_dim=8, depths=[1, 1, 1, 1],
                    num_heads=[1, 1, 1, 1], out_indices=[2, 3, 4])  # fmt: skip
    model = _random_model(_config(stand_in, apply_layernorm_after_vision_backbone=True), seed)
    weights = {
        key: value.clone()
        for key, value in model.state_dict().items()
        if not key.startswith("vision_backbone.vision_backbone.")
    }
    generator = torch.Generator().manual_seed(seed)
    for key in [k for k in weights if k.startswith("vision_backbone.layer_norms.")]:
        weights[key] += torch.randn(weights[key].shape, generator=generator) * 0.3
    timm = timm_swin_weights(**TIMM_SWIN, seed=seed)
    weights |= {TIMM_PREFIX + key: value for key, value in timm.items()}
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    config = json.loads(model.config.to_json_string()) | dict(
        backbone_config=None, backbone="swin_tiny_patch4_window7_224", use_timm_backbone=True,
        use_pretrained_backbone=False,
        backbone_kwargs=dict(out_indices=TIMM_OUT_INDICES, img_size=96, always_partition=True),
    )  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    _save_processor(directory)
    return directory


def timm_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The timm Swin's weights in a checkpoint of :func:`build_omdet_turbo_timm`, timm's names."""
    weights = load_file(directory / "model.safetensors")
    return {k.removeprefix(TIMM_PREFIX): v for k, v in weights.items() if k.startswith(TIMM_PREFIX)}


def _config(backbone: dict, **settings) -> OmDetTurboConfig:
    return OmDetTurboConfig(
        backbone_config=backbone, text_config=text_config(TEXT_LENGTH), image_size=96,
        encoder_in_channels=[16, 32, 64], encoder_hidden_dim=16, encoder_layers=1,
        encoder_attention_heads=2, encoder_dim_feedforward=32,
        vision_features_channels=[16, 16, 16], decoder_hidden_dim=16, decoder_num_heads=2,
        decoder_num_layers=2, decoder_num_points=2, decoder_dim_feedforward=32,
        task_encoder_hidden_dim=32, class_embed_dim=32, text_projection_in_dim=32,
        text_projection_out_dim=32, num_queries=30,
        # Wider than the default 0.02, so random scores spread over (0, 1) instead of
        # sitting close together for every box.
        init_std=0.15, **settings,
    )  # fmt: skip


def _random_model(config: OmDetTurboConfig, seed: int) -> OmDetTurboForObjectDetection:
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
    return model


def _save_processor(directory: Path) -> None:
    image_processor(96).save_pretrained(directory)
    clip_tokenizer(TEXT_LENGTH).save_pretrained(directory)
