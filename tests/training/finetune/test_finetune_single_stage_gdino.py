"""A single-stage Grounding DINO (``two_stage=False``, what a model trained from random weights
needs: transformers' two-stage proposals get no gradient) builds, saves and reloads."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForZeroShotObjectDetection,
    BertConfig,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    SwinConfig,
)

import sceneloc.backends.grounding_dino_compat  # noqa: F401
from checkpoints.grounding_dino import TINY


def test_a_single_stage_model_round_trips(tmp_path):
    backbone = SwinConfig(image_size=96, embed_dim=16, depths=[1, 1, 1], num_heads=[1, 2, 2],
                          window_size=4, out_features=["stage2", "stage3"])  # fmt: skip
    text = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, two_stage=False,
                                 **TINY)  # fmt: skip
    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(config).eval()
    assert model.model.reference_points.weight.abs().sum() > 0  # initialised, not left empty
    model.save_pretrained(tmp_path)
    loaded, info = AutoModelForZeroShotObjectDetection.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    inputs = {"pixel_values": torch.rand(1, 3, 96, 96),
              "input_ids": torch.tensor([[101, 1996, 2417, 2675, 1012, 102]])}  # fmt: skip
    with torch.no_grad():
        assert torch.equal(model(**inputs).pred_boxes, loaded.eval()(**inputs).pred_boxes)
