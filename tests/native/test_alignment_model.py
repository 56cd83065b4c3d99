"""The alignment model's scores and losses are the paper's formulas; it saves and loads."""

from __future__ import annotations

import itertools

import pytest
import torch
from tests.checkpoints.alignment import build_alignment

from sceneloc.native.alignment import (
    AlignmentModel,
    pool_regions,
    ranking_loss,
    region_ranking_loss,
    sentence_scores,
)


def test_sentence_score_sums_each_words_best_region():
    torch.manual_seed(0)
    regions, words = torch.randn(3, 4, 5), torch.randn(2, 6, 5)
    region_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    attention_mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    got = sentence_scores(regions, region_mask, words, attention_mask)
    for k, j in itertools.product(range(3), range(2)):
        want = sum(
            max(float(regions[k, i] @ words[j, t]) for i in range(4) if region_mask[k, i])
            for t in range(6)
            if attention_mask[j, t]
        )
        assert float(got[k, j]) == pytest.approx(want, abs=1e-5)


def test_ranking_loss_is_the_papers_sum_with_one_sentence_per_image():
    torch.manual_seed(1)
    scores = torch.randn(5, 5) * 2
    want = sum(
        max(0.0, float(scores[k, j] - scores[k, k] + 1))
        + max(0.0, float(scores[j, k] - scores[k, k] + 1))
        for k in range(5)
        for j in range(5)
        if j != k  # the paper's l = k terms add the constant 2 per image
    )
    assert float(ranking_loss(scores, torch.arange(5))) == pytest.approx(want, abs=1e-5)


def test_ranking_loss_by_hand_with_two_sentences_on_one_image():
    # Image 0 has sentences 0 and 1, image 1 sentence 2; S[k, l].
    scores = torch.tensor([[3.0, 1.0, 2.5], [0.5, 1.5, 2.0]])
    # Sentence 0 (S=3): image 0 vs sentence 2 (2.5): 0.5; image 1 vs image 0 (0.5): 0.
    # Sentence 1 (S=1): sentence 2 (2.5): 2.5; image 1 (1.5): 1.5.
    # Sentence 2 (S=2): image 1 vs sentences 0 (0.5), 1 (1.5): 0 + 0.5; image 0 (2.5): 1.5.
    assert float(ranking_loss(scores, torch.tensor([0, 0, 1]))) == pytest.approx(6.5)


def test_region_ranking_loss_ranks_the_own_region_above_the_images_others():
    scores = torch.tensor([[2.0, 1.5, 0.0, 9.0], [0.0, 1.0, 3.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    # Row 0, own 0: 0.5 + 0 (the padded region does not count); row 1, own 2: 0 + 0 + 0;
    # row 2 is not known.
    loss = region_ranking_loss(scores, mask, torch.tensor([0, 2, -1]))
    assert float(loss) == pytest.approx(0.5)


def test_regions_pool_the_features_inside_their_boxes():
    # A feature map whose one channel is each pixel's x centre, the other its y centre.
    size = 8
    centres = (torch.arange(size) + 0.5) / size
    features = torch.stack([centres.expand(size, size), centres[:, None].expand(size, size)])
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.25, 0.5, 1.0, 0.75]]])
    pooled = pool_regions(features[None], boxes, samples=4)
    want = torch.tensor([[0.25, 0.25], [0.625, 0.625]])
    assert torch.allclose(pooled[0], want, atol=1e-6)


def test_a_saved_model_loads_with_the_same_outputs(tmp_path):
    directory = build_alignment(tmp_path / "model", ["the red square", "a blue circle"])
    model = AlignmentModel.from_pretrained(directory).eval()
    again = AlignmentModel.from_pretrained(directory).eval()
    assert again.config.model_type == "sceneloc-alignment"
    inputs = {
        "pixel_values": torch.randn(2, 3, 64, 64),
        "region_boxes": torch.tensor([[[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.9]]] * 2),
        "region_mask": torch.ones(2, 2, dtype=torch.bool),
        "input_ids": torch.tensor([[2, 3, 4], [5, 6, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
        "image_index": torch.tensor([0, 1]),
    }
    with torch.no_grad():
        first, second = model(**inputs), again(**inputs)
    assert torch.equal(first.scores, second.scores)
    assert float(first.loss) == float(second.loss)
