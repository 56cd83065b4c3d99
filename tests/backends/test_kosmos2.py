"""Kosmos-2 backend against transformers' own reference path (processor, generate, parse)."""

from __future__ import annotations

import math

import pytest
import torch
from matching import (
    assert_alone_equals_together,
    assert_box_alone_equals_box_among_others,
    assert_same,
    forward_counts,
    recorded_calls,
)
from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

import sceneloc
from sceneloc.api import rank
from sceneloc.backends.kosmos2 import DESCRIBE_PROMPT, GROUNDING_PROMPT, MAX_NEW_TOKENS
from sceneloc.candidates import Candidate, Candidates

#: Two queries of one token length (one batch) and two of others.
QUERIES = ["the red square", "the blue circle", "a green circle left of the blue triangle", "blue"]
BOXES = [[10, 10, 50, 60], [70, 20, 110, 70], [120, 50, 150, 80]]
TOP_K = 10


@pytest.fixture(scope="module")
def grounder(kosmos2_dir):
    return sceneloc.load(str(kosmos2_dir), device="cpu")


@pytest.fixture(scope="module")
def describer(grounder):
    return sceneloc.Describer(grounder.backend, grounder.name)


@pytest.fixture(scope="module")
def reference_model(kosmos2_dir):
    processor = AutoProcessor.from_pretrained(kosmos2_dir)
    return processor, Kosmos2ForConditionalGeneration.from_pretrained(kosmos2_dir).eval()


def reference_answer(reference_model, image, prompt: str, bboxes=None):
    """The model card's usage for one prompt: the processor's cleaned text and entities of
    the greedy answer, the answer's tokens and their log-probabilities, recomputed by a
    teacher-forced pass over the whole sequence."""
    processor, model = reference_model
    inputs = processor(text=prompt, images=image, bboxes=bboxes, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        mask = torch.zeros_like(ids)
        mask[:, : inputs["image_embeds_position_mask"].shape[1]] = inputs[
            "image_embeds_position_mask"
        ]
        logits = model(
            pixel_values=inputs["pixel_values"],
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            image_embeds_position_mask=mask,
        ).logits
    prompt_length = inputs["input_ids"].shape[1]
    answer = ids[0, prompt_length:]
    log_probs = logits[0, prompt_length - 1 : -1].log_softmax(-1).gather(-1, answer[:, None])[:, 0]
    text = processor.batch_decode(ids, skip_special_tokens=True)[0]
    cleaned, entities = processor.post_process_generation(text)
    return cleaned, entities, answer.tolist(), log_probs


def reference_candidates(reference_model, image, query: str) -> Candidates:
    """The boxes of the query's phrase (the one its prompt opens with), each scored by the
    geometric mean of the probabilities of its two patch-index tokens."""
    processor, _ = reference_model
    _, entities, answer, log_probs = reference_answer(
        reference_model, image, GROUNDING_PROMPT.format(query=query)
    )
    boxes = next((found for _, (start, _), found in entities if start == 0), [])
    tokens = processor.tokenizer.convert_ids_to_tokens(answer)
    patches = [i for i, token in enumerate(tokens) if token.startswith("<patch_index_")]
    width, height = image.size
    raw = [
        Candidate(
            [x1 * width, y1 * height, x2 * width, y2 * height],
            math.exp(log_probs[patches[2 * n : 2 * n + 2]].mean()),
            query,
        )
        for n, (x1, y1, x2, y2) in enumerate(boxes)
    ]
    return rank(Candidates.from_list(raw), image.size, 0.0, TOP_K)


def test_locate_matches_reference_for_each_query_asked_with_others(
    grounder, reference_model, scene
):
    results = grounder.locate(scene, QUERIES, threshold=0.0, top_k=TOP_K)
    assert [r.query for r in results] == QUERIES
    for result in results:
        expected = reference_candidates(reference_model, scene, result.query)
        assert expected, "the tiny model should ground every query"
        assert_same(result.candidates, expected, score_tolerance=1e-4)
    assert len({tuple(r.box) for r in results}) > 1, "boxes should depend on the query"


def test_query_alone_equals_query_among_others(grounder, scene):
    assert_alone_equals_together(grounder, scene, QUERIES, TOP_K)


def reference_caption(reference_model, image, box) -> tuple[str, float]:
    """The model card's region description of one box: its words after the prompt's, and
    the mean log-probability of the answer's tokens other than its end."""
    processor, _ = reference_model
    width, height = image.size
    region = (box[0] / width, box[1] / height, box[2] / width, box[3] / height)
    cleaned, _, answer, log_probs = reference_answer(
        reference_model, image, DESCRIBE_PROMPT, bboxes=[region]
    )
    words = [i for i, token in enumerate(answer) if token != processor.tokenizer.eos_token_id]
    assert cleaned.startswith("It is ")
    return cleaned.removeprefix("It is ").strip(), float(log_probs[words].mean())


def test_describe_matches_reference_box_by_box(describer, reference_model, scene):
    answer = describer.describe(scene, BOXES)
    assert [region.box for region in answer] == BOXES
    for region, box in zip(answer, BOXES):
        caption, score = reference_caption(reference_model, scene, box)
        assert region.caption == caption
        assert region.score == pytest.approx(score, abs=1e-4)
    assert len(set(answer.captions)) > 1, "captions should depend on the box"


def test_box_alone_equals_box_among_others(describer, scene):
    assert_box_alone_equals_box_among_others(describer, scene, BOXES, score_tolerance=1e-5)


def test_image_encoded_once_and_prompts_of_one_length_generated_together(
    grounder, describer, scene, monkeypatch
):
    backend = grounder.backend
    calls = recorded_calls(monkeypatch, backend.model, "generate")
    with forward_counts(vision=backend.model.vision_model) as counts:
        describer.describe(scene, BOXES * 3)
    assert counts == {"vision": 1}
    assert [len(call["input_ids"]) for call in calls] == [9]
    calls.clear()
    with forward_counts(vision=backend.model.vision_model) as counts:
        grounder.locate(scene, QUERIES)
    assert counts == {"vision": 1}
    assert sorted(len(call["input_ids"]) for call in calls) == [1, 1, 2]


def test_describe_needs_boxes(describer, scene):
    with pytest.raises(sceneloc.InvalidBoxError, match="pass boxes"):
        describer.describe(scene)


def test_short_name_is_the_hub_checkpoint_for_both_tasks():
    for task in ("locate", "describe"):
        found = sceneloc.registry.resolve("kosmos-2", task)
        assert found.family.name == "kosmos-2"
        assert found.checkpoint == "microsoft/kosmos-2-patch14-224"
