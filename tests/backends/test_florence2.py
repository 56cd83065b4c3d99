"""Florence-2 backend against transformers' own reference path (processor, generate, parse)."""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pytest
import torch
from matching import (
    assert_alone_equals_together,
    assert_box_alone_equals_box_among_others,
    assert_same,
    forward_counts,
    recorded_calls,
)
from transformers import AutoProcessor, Florence2ForConditionalGeneration

import sceneloc
from sceneloc.api import rank
from sceneloc.backends.florence2 import (
    DENSE_REGION_CAPTION,
    GROUNDING,
    REGION_TO_DESCRIPTION,
    Florence2Backend,
)
from sceneloc.candidates import Candidate, Candidates

QUERIES = ["the red square", "a green circle left of the blue triangle", "blue"]
TOP_K = 10
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def grounder(florence2_dir):
    return sceneloc.load(str(florence2_dir), device="cpu")


def reference_answer(checkpoint, image, prompt: str, num_beams: int = 3, max_new_tokens=256):
    """The model card's usage for one prompt: the processor, the generated answer (without
    the decoder's start token) and each answer token's log-probability, recomputed by a
    teacher-forced pass over the answer."""
    processor = AutoProcessor.from_pretrained(checkpoint)
    model = Florence2ForConditionalGeneration.from_pretrained(checkpoint).eval()
    inputs = processor(text=prompt, images=image, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(
            **inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False
        )
        logits = model(**inputs, decoder_input_ids=ids[:, :-1]).logits
    answer = ids[0, 1:]
    log_probs = logits[0].log_softmax(-1).gather(-1, answer[:, None])[:, 0]
    return processor, ids[0], log_probs


def reference(checkpoint, image, query: str) -> Candidates:
    """One query asked alone, each box scored independently: the geometric mean of the
    probabilities of the box's four location tokens."""
    processor, ids, log_probs = reference_answer(checkpoint, image, GROUNDING + query)
    text = processor.decode(ids, skip_special_tokens=False)
    parsed = processor.post_process_generation(text, task=GROUNDING, image_size=image.size)[
        GROUNDING
    ]
    tags = [
        i
        for i, token in enumerate(processor.tokenizer.convert_ids_to_tokens(ids[1:]))
        if token.startswith("<loc_")
    ]
    assert len(tags) == 4 * len(parsed["bboxes"]), "the tiny model writes four tags per box"
    raw = [
        Candidate(
            [float(v) for v in box], math.exp(log_probs[tags[4 * n : 4 * n + 4]].mean()), label
        )
        for n, (box, label) in enumerate(zip(parsed["bboxes"], parsed["labels"]))
    ]
    return rank(Candidates.from_list(raw), image.size, 0.0, TOP_K)


def test_matches_reference_for_each_query_asked_with_others(grounder, florence2_dir, scene):
    results = grounder.locate(scene, QUERIES, threshold=0.0, top_k=TOP_K)
    assert [r.query for r in results] == QUERIES
    for result in results:
        expected = reference(florence2_dir, scene, result.query)
        assert expected, "the tiny model should ground something"
        assert_same(result.candidates, expected, score_tolerance=1e-4, box_tolerance=0)
    assert len({tuple(r.box) for r in results}) > 1, "boxes should depend on the query"


def test_query_alone_equals_query_among_others(grounder, scene):
    assert_alone_equals_together(
        grounder, scene, QUERIES, TOP_K, score_tolerance=1e-5, box_tolerance=0
    )


def test_queries_batched_into_one_generate_and_image_encoded_once(grounder, scene, monkeypatch):
    backend = grounder.backend
    generate, preprocess = backend.model.generate, backend.processor.image_processor.preprocess
    calls = {"generate": 0, "preprocess": 0, "vision": 0}

    def count(name, function):
        def counted(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return counted

    monkeypatch.setattr(backend.model, "generate", count("generate", generate))
    monkeypatch.setattr(
        backend.processor.image_processor, "preprocess", count("preprocess", preprocess)
    )
    hook = backend.model.model.vision_tower.register_forward_hook(
        lambda *_: calls.__setitem__("vision", calls["vision"] + 1)
    )
    try:
        grounder.locate(scene, [f"object number {i}" for i in range(5)])
    finally:
        hook.remove()
    assert calls == {"generate": 1, "preprocess": 1, "vision": 1}


def test_raw_boxes_lie_within_the_image(grounder, scene):
    with torch.inference_mode():
        found = grounder.backend.predict(scene, QUERIES, threshold=0.0)
    width, height = scene.size
    assert all(found)
    for candidate in (c for per_query in found for c in per_query):
        x1, y1, x2, y2 = candidate.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_generation_stops_at_max_new_tokens(florence2_dir, scene):
    # The tiny model's first box ends with its seventh token, and the eighth is forced to be
    # the end of the answer (``forced_eos_token_id``, as in BART): seven tokens give no box.
    for limit, boxes in ((7, 0), (8, 1)):
        capped = sceneloc.load(str(florence2_dir), device="cpu", max_new_tokens=limit)
        (result,) = capped.locate(scene, QUERIES[0], threshold=0.0)
        assert len(result.candidates) == boxes


def test_runs_in_bfloat16(florence2_dir, scene):
    backend = Florence2Backend.from_pretrained(str(florence2_dir), CPU, torch.bfloat16)
    with torch.inference_mode():
        found = backend.predict(scene, QUERIES, threshold=0.0)
        exact = Florence2Backend.from_pretrained(str(florence2_dir), CPU, torch.float32)
        reference = exact.predict(scene, QUERIES, threshold=0.0)
    # Half precision gives the same answers (the boxes' location tokens), scores nearly so.
    for half, full in zip(found, reference):
        assert half.boxes.tolist() == full.boxes.tolist()
        assert half.scores == pytest.approx(full.scores, abs=0.05)


def test_prompt_is_what_the_processor_builds(grounder, scene):
    backend = grounder.backend
    for query in QUERIES:
        inputs = backend.processor(text=GROUNDING + query, images=scene, return_tensors="pt")
        prompt = backend.prompt_for(GROUNDING, query)
        built = backend.processor.tokenizer(prompt, add_special_tokens=False)
        assert built["input_ids"] == inputs["input_ids"][0].tolist()


def answer(backend: Florence2Backend, *pieces: str) -> list[int]:
    """Token ids of an answer; tags are location tokens, other text is ordinary tokens."""
    tokenizer = backend.processor.tokenizer
    ids = [tokenizer.eos_token_id, tokenizer.bos_token_id]
    for piece in pieces:
        ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
    return [*ids, tokenizer.eos_token_id]


@pytest.mark.parametrize(
    ("pieces", "tag_numbers"),
    [
        # two phrases, the first with two boxes
        ((" red", "<loc_1><loc_2><loc_600><loc_700><loc_5><loc_6><loc_900><loc_800>", " blue",
          "<loc_10><loc_20><loc_30><loc_40>"), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]),
        # the parser takes the first tag of a leading run of five as the phrase
        (("<loc_1><loc_2><loc_3><loc_4><loc_5>",), [[1, 2, 3, 4]]),
        # a run of three tags is no box; a banned phrase is dropped
        ((" red<loc_1><loc_2><loc_3> square<loc_4><loc_5><loc_6><loc_7>",
          " the image<loc_8><loc_9><loc_10><loc_11>"), [[3, 4, 5, 6]]),
    ],
)  # fmt: skip
def test_unusual_answers_parse_like_the_processor(grounder, scene, pieces, tag_numbers):
    backend = grounder.backend
    sequence = answer(backend, *pieces)
    log_probs = [-0.01 * (i + 1) for i in range(len(sequence) - 1)]
    tags = [p for t, p in zip(sequence[1:], log_probs) if t in backend.location_ids]
    text = backend.processor.tokenizer.decode(sequence, skip_special_tokens=False)
    parsed = backend.processor.post_process_generation(text, task=GROUNDING, image_size=scene.size)[
        GROUNDING
    ]

    found = backend._candidates(sequence, log_probs, scene.size)
    assert [c.box for c in found] == parsed["bboxes"]
    assert [c.label for c in found] == parsed["labels"]
    expected = [math.exp(sum(tags[n] for n in numbers) / 4) for numbers in tag_numbers]
    assert [c.score for c in found] == pytest.approx(expected)


def test_tags_spelt_with_ordinary_tokens_score_zero(grounder, scene, caplog):
    backend = grounder.backend
    tokenizer = backend.processor.tokenizer
    spelt = tokenizer.convert_tokens_to_ids(list("<loc_7>"))
    sequence = answer(backend, " red")[:-1] + spelt + answer(backend, "<loc_1><loc_2><loc_3>")[2:]
    with caplog.at_level(logging.WARNING, logger="sceneloc.backends.florence2"):
        found = backend._candidates(sequence, [-0.1] * (len(sequence) - 1), scene.size)
    assert [(c.label, c.score) for c in found] == [("red", 0.0)]
    assert "not all location tokens" in caplog.text


def test_missing_checkpoint_raises_model_not_found(tmp_path):
    with pytest.raises(sceneloc.ModelNotFoundError):
        Florence2Backend.from_pretrained(str(tmp_path / "no-such-model"), CPU, torch.float32)


# --- describe ---------------------------------------------------------------------------------

BOXES = [[10, 10, 50, 60], [70, 20, 110, 70], [120, 50, 150, 80]]


@pytest.fixture(scope="module")
def describer(florence2_dir):
    return sceneloc.load(str(florence2_dir), task="describe", device="cpu")


def reference_caption(checkpoint, image, box, num_beams: int) -> tuple[str, float]:
    """The model card's region description for one box: the box as the processor's location
    tokens, generate, the processor's post-processing; the score is the mean teacher-forced
    log-probability of the answer's tokens other than its start and end."""
    processor = AutoProcessor.from_pretrained(checkpoint)
    bins = processor.post_processor.quantize(torch.tensor([box], dtype=torch.float64), image.size)
    region = "".join(f"<loc_{int(b)}>" for b in bins[0])
    _, ids, log_probs = reference_answer(
        checkpoint, image, REGION_TO_DESCRIPTION + region, num_beams, max_new_tokens=1024
    )
    text = processor.decode(ids, skip_special_tokens=False)
    caption = processor.post_process_generation(
        text, task=REGION_TO_DESCRIPTION, image_size=image.size
    )[REGION_TO_DESCRIPTION]
    markers = {processor.tokenizer.bos_token_id, processor.tokenizer.eos_token_id}
    words = [i for i, token in enumerate(ids[1:].tolist()) if token not in markers]
    return caption, float(log_probs[words].mean())


@pytest.mark.parametrize("num_beams", [3, 1])
def test_region_captions_match_reference_box_by_box(describer, florence2_dir, scene, num_beams):
    answer = describer.describe(scene, BOXES, num_beams=num_beams)
    assert [region.box for region in answer] == BOXES
    for region, box in zip(answer, BOXES):
        caption, score = reference_caption(florence2_dir, scene, box, num_beams)
        assert region.caption == caption
        assert region.score == pytest.approx(score, abs=1e-4)
    assert len(set(answer.captions)) > 1, "captions should depend on the box"


def test_box_alone_equals_box_among_others(describer, scene):
    assert_box_alone_equals_box_among_others(describer, scene, BOXES, score_tolerance=1e-5)


def test_boxes_described_in_one_generate_with_the_image_encoded_once(describer, scene, monkeypatch):
    backend = describer.backend
    calls = recorded_calls(monkeypatch, backend.model, "generate")
    with forward_counts(vision=backend.model.model.vision_tower) as counts:
        describer.describe(scene, BOXES * 5)
    assert counts == {"vision": 1}
    assert len(calls) == 1


@pytest.mark.parametrize("size", [(160, 96), (4000, 3000)])
def test_box_quantisation_round_trips_within_one_bin(describer, size):
    backend = describer.backend
    width, height = size
    steps = np.linspace(0.0, 1.0, 97)  # corners at many places within their bins
    boxes = [[x * width * 0.9, x * height * 0.9, width * (0.1 + 0.9 * x), height * (0.1 + 0.9 * x)]
             for x in steps]  # fmt: skip
    for box in boxes:
        tags = backend.region_text(box, size)
        tokens = backend.processor.tokenizer(tags, add_special_tokens=False)["input_ids"]
        assert len(tokens) == 4 and set(tokens) <= backend.location_ids
        bins = torch.tensor([[int(n) for n in re.findall(r"<loc_(\d+)>", tags)]])
        back = backend.processor.post_processor.dequantize(bins, size)[0].tolist()
        # The bin's centre is within half a bin; dequantize's int() takes up to a pixel more.
        tolerance = [width / 1000 / 2 + 1, height / 1000 / 2 + 1] * 2
        for original, restored, allowed in zip(box, back, tolerance):
            assert abs(original - restored) <= allowed


def test_dense_captions_match_reference(describer, florence2_dir, scene):
    answer = describer.describe(scene)
    processor, ids, log_probs = reference_answer(
        florence2_dir, scene, DENSE_REGION_CAPTION, max_new_tokens=1024
    )
    text = processor.decode(ids, skip_special_tokens=False)
    parsed = processor.post_process_generation(
        text, task=DENSE_REGION_CAPTION, image_size=scene.size
    )[DENSE_REGION_CAPTION]
    assert len(parsed["bboxes"]) == 2, "the tiny model writes two regions"
    assert [r.box for r in answer] == [[float(v) for v in b] for b in parsed["bboxes"]]
    assert answer.captions == parsed["labels"]
    # The tiny model's grammar: <s>, two words and a box, one word and a box, </s>.
    own_tokens = [slice(1, 7), slice(7, 12)]
    expected = [float(log_probs[tokens].mean()) for tokens in own_tokens]
    assert [r.score for r in answer] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("pieces", "regions"),
    [
        # a phrase with two boxes gives its words to both; a second phrase has its own
        ((" red square", "<loc_1><loc_2><loc_600><loc_700><loc_5><loc_6><loc_900><loc_800>",
          " blue", "<loc_10><loc_20><loc_30><loc_40>"),
         [("red square", [1, 2, 3, 4, 5, 6]), ("red square", [1, 2, 7, 8, 9, 10]),
          ("blue", [11, 12, 13, 14, 15])]),
        # words without tags are no region
        ((" red", "<loc_1><loc_2><loc_3><loc_4>", " blue"), [("red", [1, 2, 3, 4, 5])]),
    ],
)  # fmt: skip
def test_dense_answers_parse_like_the_processor(describer, scene, pieces, regions):
    backend = describer.backend
    assert (
        len(backend.processor.tokenizer(" red square", add_special_tokens=False)["input_ids"]) == 2
    )
    sequence = answer(backend, *pieces)
    generated = sequence[1:]
    log_probs = [-0.01 * (i + 1) for i in range(len(generated))]
    text = backend.processor.tokenizer.decode(sequence, skip_special_tokens=False)
    parsed = backend.processor.post_process_generation(
        text, task=DENSE_REGION_CAPTION, image_size=scene.size
    )[DENSE_REGION_CAPTION]

    found = backend._dense_regions(sequence, log_probs, scene.size)
    assert [c.box for c in found] == [[float(v) for v in b] for b in parsed["bboxes"]]
    assert [c.caption for c in found] == parsed["labels"] == [label for label, _ in regions]
    expected = [sum(log_probs[i] for i in own) / len(own) for _, own in regions]
    assert [c.score for c in found] == pytest.approx(expected)


def test_describe_runs_in_bfloat16(florence2_dir, scene):
    backend = Florence2Backend.from_pretrained(str(florence2_dir), CPU, torch.bfloat16)
    exact = Florence2Backend.from_pretrained(str(florence2_dir), CPU, torch.float32)
    with torch.inference_mode():
        half = backend.describe(scene, np.array(BOXES), max_new_tokens=64, num_beams=3)
        full = exact.describe(scene, np.array(BOXES), max_new_tokens=64, num_beams=3)
    # Half precision may flip a near tie of the tiny model's location tokens, so the words
    # are compared, not the whole answers; the likelihoods stay close.
    assert [c.caption.split("<")[0] for c in half] == [c.caption.split("<")[0] for c in full]
    assert [c.score for c in half] == pytest.approx([c.score for c in full], abs=0.05)
