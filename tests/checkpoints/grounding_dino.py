"""Tiny randomly initialised Grounding DINO / MM-Grounding-DINO checkpoints on disk."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BertConfig,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessor,
    GroundingDinoProcessor,
    MMGroundingDinoConfig,
    MMGroundingDinoForObjectDetection,
    SwinConfig,
)

import sceneloc.backends.grounding_dino_compat  # noqa: F401 (single-stage models build)
from checkpoints.wordpiece import bert_tokenizer

TINY = dict(
    num_queries=30,
    encoder_layers=1,
    decoder_layers=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    d_model=32,
    num_feature_levels=2,
    encoder_n_points=2,
    decoder_n_points=2,
    max_text_len=32,
)


def build_grounding_dino(directory: Path, mm: bool = False, seed: int = 0) -> Path:
    """Save a tiny (MM-)Grounding-DINO with a real BERT vocabulary and a 96-px processor."""
    config_cls, model_cls = (
        (MMGroundingDinoConfig, MMGroundingDinoForObjectDetection)
        if mm
        else (GroundingDinoConfig, GroundingDinoForObjectDetection)
    )
    backbone = SwinConfig(
        image_size=96, embed_dim=16, depths=[1, 1, 1], num_heads=[1, 2, 2], window_size=4,
        out_features=["stage2", "stage3"],
    )  # fmt: skip
    text = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    config = config_cls(backbone_config=backbone, text_config=text, **TINY)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 96, "longest_edge": 160})
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    if not mm:  # MM-Grounding-DINO's logit bias keeps random scores unsaturated.
        with torch.no_grad():
            # Shrink the decoder's output so random logits spread over (0, 1).
            model.model.decoder.layer_norm.weight.mul_(0.1)
    model.save_pretrained(directory)
    GroundingDinoProcessor(image_processor, bert_tokenizer()).save_pretrained(directory)
    return directory


#: A small Grounding DINO that fine-tuning can teach in minutes on a CPU (the tiny one above
#: is for speed, not learning): wider, more heads, no dropout, and four feature levels (the
#: coarsest one's anchors are 0.4 of the image: the encoder's proposals never learn).
LEARNABLE = dict(
    TINY,
    num_queries=10,
    dropout=0.0,
    fusion_droppath=0.0,
    d_model=64,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    num_feature_levels=4,
    encoder_n_points=4,
    decoder_n_points=4,
)


def build_learnable_grounding_dino(
    directory: Path,
    mm: bool = False,
    seed: int = 0,
    image_size: int = 128,
    stages: tuple[str, ...] = ("stage2", "stage3"),
    **overrides,
) -> Path:
    """Save a small randomly initialised (MM-)Grounding-DINO sized for overfitting tests
    (``two_stage=False`` in ``overrides``: a single-stage one, whose boxes start small)."""
    config_cls, model_cls = (
        (MMGroundingDinoConfig, MMGroundingDinoForObjectDetection)
        if mm
        else (GroundingDinoConfig, GroundingDinoForObjectDetection)
    )
    backbone = SwinConfig(
        image_size=image_size, embed_dim=24, depths=[1, 1, 1], num_heads=[2, 2, 4],
        window_size=4, out_features=list(stages), drop_path_rate=0.0,
    )  # fmt: skip
    text = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    config = config_cls(backbone_config=backbone, text_config=text, **{**LEARNABLE, **overrides})
    image_processor = GroundingDinoImageProcessor(
        size={"shortest_edge": image_size, "longest_edge": image_size}
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    if not config.two_stage:
        start_small(model)
    model.save_pretrained(directory)
    GroundingDinoProcessor(image_processor, bert_tokenizer()).save_pretrained(directory)
    return directory


def start_small(model: torch.nn.Module, side: float = 0.25) -> None:
    """Make a single-stage model's first boxes its learned reference boxes, ``side`` of the
    image wide and high at random centres (the box heads' last layers start at zero, as the
    original DINO initialises them): transformers' reference boxes start near half the image
    in its middle, where a random model finds a large object by chance; a quarter-side box
    overlaps a shape of 0.36 of the side or more (the overfit benchmark's) with IoU < 0.5."""
    with torch.no_grad():
        for head in model.bbox_embed:
            head.layers[-1].weight.zero_()
            head.layers[-1].bias.zero_()
        points = model.model.reference_points.weight
        points[:, 2:] = torch.logit(torch.tensor(side))
        points[:, :2] = torch.logit(torch.empty_like(points[:, :2]).uniform_(0.2, 0.8))
