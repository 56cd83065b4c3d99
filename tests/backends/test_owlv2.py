"""OWLv2 backend against transformers' own reference path, one query at a time."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from matching import assert_alone_equals_together, assert_same, forward_counts
from transformers import Owlv2ForObjectDetection, Owlv2Processor

import sceneloc
from sceneloc.api import rank
from sceneloc.candidates import Candidate, Candidates

# The second query is longer than the 16 tokens OWLv2 reads, so it is cut short.
QUERIES = ["the red square", "a green circle left of the blue triangle", "blue"]
THRESHOLD = 0.5
TOP_K = 4


@pytest.fixture(scope="module")
def grounder(owlv2_dir):
    return sceneloc.load(str(owlv2_dir), device="cpu")


def reference(checkpoint, image, query: str, threshold: float, top_k: int) -> Candidates:
    """The model card's usage for one query alone, with boxes scaled to the padded square."""
    processor = Owlv2Processor.from_pretrained(checkpoint)
    model = Owlv2ForObjectDetection.from_pretrained(checkpoint).eval()
    inputs = processor(text=[query], images=image, truncation=True, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    side = max(image.size)
    (found,) = processor.post_process_grounded_object_detection(
        outputs, threshold=threshold, target_sizes=[(side, side)]
    )
    raw = [Candidate(b.tolist(), float(s), query) for b, s in zip(found["boxes"], found["scores"])]
    return rank(Candidates.from_list(raw), image.size, threshold, top_k)


def test_matches_reference_for_each_query_asked_with_others(owlv2_dir, grounder, scene):
    results = grounder.locate(scene, QUERIES, threshold=THRESHOLD, top_k=TOP_K)
    assert [r.query for r in results] == QUERIES
    for result in results:
        expected = reference(owlv2_dir, scene, result.query, THRESHOLD, TOP_K)
        assert expected, "the tiny model should give candidates above the threshold"
        assert_same(result.candidates, expected)


def test_query_alone_equals_query_among_others(grounder, scene):
    assert_alone_equals_together(grounder, scene, QUERIES, top_k=100)


def test_threshold_zero_keeps_every_box_in_the_image(owlv2_dir, grounder, scene):
    (result,) = grounder.locate(scene, "blue", threshold=0.0, top_k=100)
    assert_same(result.candidates, reference(owlv2_dir, scene, "blue", 0.0, 100))
    # 6x6 patches of the padded square, less those whose boxes lie wholly in the padding.
    assert 0 < len(result.candidates) < 36


def test_image_encoded_once_per_call(grounder, scene):
    owl = grounder.backend.model.owlv2
    with forward_counts(vision=owl.vision_model, text=owl.text_model) as calls:
        results = grounder.locate(scene, [f"object number {i}" for i in range(8)], threshold=0.0)
    assert calls == {"vision": 1, "text": 1}
    assert all(r.candidates for r in results)


def test_boxes_lie_within_the_image(grounder, scene):
    width, height = scene.size
    for result in grounder.locate(scene, QUERIES, threshold=0.0, top_k=100):
        assert len(result.candidates) > 0, result.query
        for candidate in result.candidates:
            x1, y1, x2, y2 = candidate.box
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_long_query_is_cut_with_a_warning(grounder, scene, caplog):
    with caplog.at_level(logging.WARNING, logger="sceneloc.backends.base"):
        grounder.locate(scene, QUERIES)
    assert "reads the first 16 only" in caplog.text
    assert QUERIES[1] in caplog.text


def test_missing_checkpoint(tmp_path, owlv2_dir):
    with pytest.raises(sceneloc.ModelNotFoundError):
        sceneloc.load(str(tmp_path / "no-such-model"), device="cpu")
    # A directory with OWLv2's config.json but no weights nor processor.
    (tmp_path / "config.json").write_text((owlv2_dir / "config.json").read_text())
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "owlv2"
    with pytest.raises(sceneloc.ModelNotFoundError, match="cannot load"):
        sceneloc.load(str(tmp_path), device="cpu")


@pytest.fixture(scope="module")
def converted_dir(owlv2_dir, tmp_path_factory):
    """The tiny checkpoint as a local conversion may leave it: no ``model_max_length``."""
    copy = shutil.copytree(owlv2_dir, tmp_path_factory.mktemp("owlv2-converted") / "model")
    config_path = copy / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    del config["model_max_length"]
    config_path.write_text(json.dumps(config))
    assert Owlv2Processor.from_pretrained(copy).tokenizer.model_max_length > 10**6
    return copy


def test_tokenizer_without_max_length_answers_queries_of_different_lengths(converted_dir, scene):
    queries = ["the red square", "blue"]  # both within the text tower's 16 tokens
    grounder = sceneloc.load(str(converted_dir), device="cpu")
    results = grounder.locate(scene, queries, threshold=THRESHOLD, top_k=TOP_K)
    for result in results:
        expected = reference(converted_dir, scene, result.query, THRESHOLD, TOP_K)
        assert expected, "the tiny model should give candidates above the threshold"
        assert_same(result.candidates, expected)
