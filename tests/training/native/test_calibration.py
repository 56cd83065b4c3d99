"""Presence calibration: a logistic regression on the presence and best-cell logits."""

from __future__ import annotations

import json

import pytest
import torch

from sceneloc.backends.native import NativeBackend
from sceneloc.native import NativeConfig, NativeGroundingModel
from sceneloc.native.text import vocabulary_from_texts, word_tokenizer
from sceneloc.training.native.calibration import calibrate_presence, fit_presence


def features(*columns: torch.Tensor) -> torch.Tensor:
    """Rows of the given columns and the constant 1."""
    return torch.stack([*columns, torch.ones_like(columns[0])], dim=1)


def test_separable_scores_are_split_between_the_classes():
    generator = torch.Generator().manual_seed(0)
    present = features(2 + torch.randn(200, generator=generator), torch.zeros(200))
    absent = features(-2 + torch.randn(300, generator=generator), torch.zeros(300))
    fitted = fit_presence(present, absent)
    assert fitted.present_kept > 0.95 and fitted.absent_refused > 0.95
    weight, _unused, bias = fitted.weights
    assert weight > 0
    # Equal class weights and symmetric classes: the boundary lies near the middle, 0.
    assert abs(bias / weight) < 0.3
    assert fitted.queries == 500


def test_second_input_rescues_what_the_first_cannot_tell_apart():
    # As measured on the bundled model: relation queries have a high presence logit, plain
    # descriptions a high best-cell logit, absent ones neither.
    generator = torch.Generator().manual_seed(1)

    def noise(n: int) -> torch.Tensor:
        return 0.5 * torch.randn(n, generator=generator)

    relations = features(3 + noise(100), noise(100))
    plain = features(noise(100), 3 + noise(100))
    absent = features(noise(200), noise(200))
    fitted = fit_presence(torch.cat([relations, plain]), absent)
    weights = torch.tensor(fitted.weights)
    for present in (relations, plain):
        assert ((present @ weights) >= 0).float().mean() > 0.9
    assert ((absent @ weights) < 0).float().mean() > 0.9
    assert all(w > 0 for w in fitted.weights[:2])


def test_both_classes_are_needed():
    with pytest.raises(ValueError, match="both present and absent"):
        fit_presence(features(torch.ones(3), torch.ones(3)), torch.empty(0, 3))


def test_one_photo_gives_nothing_to_calibrate_and_keeps_the_config(tmp_path, scene):
    """Absent queries for photos are borrowed from other images; with one there are none."""
    scene.save(tmp_path / "photo.png")
    queries = ["the red square", "a blue triangle"]
    data = tmp_path / "val.jsonl"
    data.write_text("".join(
        json.dumps({"id": str(i), "image": "photo.png", "query": q, "box": [0, 0, 10, 10],
                    "split": "val"}) + "\n"
        for i, q in enumerate(queries)
    ))  # fmt: skip
    tokenizer = word_tokenizer(vocabulary_from_texts(queries), max_length=8)
    config = NativeConfig(image_size=64, hidden_size=16, fusion_layers=1, image_layers=1,
                          text_layers=1, attention_heads=2, cnn_channels=[8, 16, 16, 16],
                          vocab_size=len(tokenizer), max_text_length=8)  # fmt: skip
    backend = NativeBackend(NativeGroundingModel(config), tokenizer)
    assert calibrate_presence(backend, data) is None
    assert backend.model.config.presence_calibration == [1.0, 0.0, 0.0]
