"""The Python API's contract, on a tiny Grounding DINO built on disk."""

from __future__ import annotations

import io
import json

import pytest
import torch

import sceneloc
from sceneloc.api import rank, resolve_dtype
from sceneloc.types import Candidate
from test_images import exif_rotated_jpeg


@pytest.fixture(scope="module")
def grounder(grounding_dino_dir):
    return sceneloc.load(str(grounding_dino_dir), device="cpu")


def test_float32_on_cpu(grounder):
    assert grounder.device.type == "cpu"
    assert grounder.dtype == torch.float32
    assert next(grounder.backend.model.parameters()).dtype == torch.float32


def test_half_precision_on_a_gpu_only_when_the_model_tolerates_it():
    assert resolve_dtype("auto", torch.device("mps"), half_ok=True) == torch.float16
    assert resolve_dtype("auto", torch.device("mps"), half_ok=False) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu"), half_ok=True) == torch.bfloat16
    with pytest.raises(sceneloc.SceneLocError, match="unknown dtype"):
        resolve_dtype("float8", torch.device("cpu"), half_ok=True)


def test_one_result_per_query_in_order(grounder, scene):
    queries = ["the red square", "a blue triangle", "green"]
    results = grounder.locate(scene, queries, threshold=0.0, top_k=3)
    assert [r.query for r in results] == queries
    for result in results:
        assert len(result.candidates) == 3
        scores = [c.score for c in result.candidates]
        assert scores == sorted(scores, reverse=True)
        assert result.box == result.candidates[0].box
        assert result.score == result.candidates[0].score


def test_single_query_string_and_every_input_kind(grounder, scene, tmp_path):
    path = tmp_path / "scene.png"
    scene.save(path)
    buffer = io.BytesIO()
    scene.save(buffer, format="PNG")
    answers = [
        grounder.locate(source, "the red square", threshold=0.0)[0].to_dict()
        for source in (scene, path, str(path), buffer.getvalue())
    ]
    assert all(answer == answers[0] for answer in answers)


def test_nothing_above_threshold_gives_none(grounder, scene):
    (result,) = grounder.locate(scene, "a unicorn", threshold=1.01)
    assert result.box is None and result.score is None and result.candidates == []
    assert result.crop() is None
    assert result.to_dict() == {"query": "a unicorn", "box": None, "score": None, "candidates": []}


def test_boxes_are_in_exif_oriented_pixels(grounder, scene):
    (result,) = grounder.locate(exif_rotated_jpeg(scene), "red", threshold=0.0, top_k=20)
    width, height = scene.height, scene.width  # rotated by 90 degrees
    assert result.image.size == (width, height)
    for candidate in result.candidates:
        x1, y1, x2, y2 = candidate.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_results_crop_draw_and_serialise(grounder, scene):
    results = grounder.locate(scene, ["the red square", "green"], threshold=0.0)
    crop = results[0].crop()
    x1, y1, x2, y2 = results[0].box
    assert abs(crop.width - (x2 - x1)) <= 1 and abs(crop.height - (y2 - y1)) <= 1
    drawn = sceneloc.draw_results(scene, results)
    assert drawn.size == scene.size and drawn.tobytes() != scene.tobytes()
    payload = sceneloc.results_to_dict(results, model="tiny", path="scene.png")
    assert json.loads(json.dumps(payload)) == payload
    assert payload["image"] == {"path": "scene.png", "width": 160, "height": 96}


@pytest.mark.parametrize(
    ("queries", "message"),
    [([], "no query"), ("", "empty or blank"), (["ok", "   "], "query 2"), ([3], "not text")],
)
def test_bad_queries(grounder, scene, queries, message):
    with pytest.raises(sceneloc.InvalidQueryError, match=message):
        grounder.locate(scene, queries)


def test_top_k_must_be_positive(grounder, scene):
    with pytest.raises(sceneloc.SceneLocError, match="top_k"):
        grounder.locate(scene, "x", top_k=0)


def test_rank_clips_drops_outside_and_sorts():
    raw = [
        Candidate([-10.0, -5.0, 20.0, 30.0], 0.5, "a"),
        Candidate([200.0, 10.0, 260.0, 40.0], 0.9, "outside"),
        Candidate([10.0, 10.0, 20.0, 20.0], 0.7, "b"),
        Candidate([10.0, 10.0, 20.0, 20.0], 0.1, "low"),
    ]
    ranked = rank(raw, (100, 50), threshold=0.2, top_k=5)
    assert [c.label for c in ranked] == ["b", "a"]
    assert ranked[1].box == [0.0, 0.0, 20.0, 30.0]
