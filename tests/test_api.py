"""The Python API's contract, on a tiny Grounding DINO built on disk (masks on a tiny SAM 3)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import sceneloc
from sceneloc.api import rank, resolve_dtype
from sceneloc.masks import decode_rle
from sceneloc.schema import LocateRecord
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
    assert result.box is None and result.score is None and len(result.candidates) == 0
    assert not result.found
    assert result.crop() is None
    assert result.to_dict() == {
        "query": "a unicorn",
        "box": None,
        "score": None,
        "candidates": [],
        "targets": [],
    }


def test_boxes_are_in_exif_oriented_pixels(grounder, scene):
    (result,) = grounder.locate(exif_rotated_jpeg(scene), "red", threshold=0.0, top_k=20)
    width, height = scene.height, scene.width  # rotated by 90 degrees
    assert result.image.size == (width, height)
    assert len(result.candidates) > 0
    for candidate in result.candidates:
        x1, y1, x2, y2 = candidate.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_results_crop_draw_and_serialise(grounder, scene):
    results = grounder.locate(scene, ["the red square", "green"], threshold=0.0)
    crop = results[0].crop()
    x1, y1, x2, y2 = results[0].box
    assert abs(crop.width - (x2 - x1)) <= 1 and abs(crop.height - (y2 - y1)) <= 1
    second = results[0].crop(1)
    x1, y1, x2, y2 = results[0].candidates[1].box
    assert abs(second.width - (x2 - x1)) <= 1 and abs(second.height - (y2 - y1)) <= 1
    drawn = results.draw()
    assert drawn.size == scene.size and drawn.tobytes() != scene.tobytes()
    payload = results.to_dict()
    assert json.loads(json.dumps(payload)) == payload
    assert LocateRecord.model_validate(payload).model_dump() == payload
    assert payload["image"] == {"path": None, "width": 160, "height": 96}
    assert payload["model"] == grounder.name
    assert payload["results"] == [r.to_dict() for r in results]


def test_the_answer_is_the_sequence_of_results_with_its_image(grounder, scene, tmp_path):
    path = tmp_path / "scene.png"
    scene.save(path)
    answer = grounder.locate(path, ["the red square", "green"], threshold=0.0, top_k=2)
    assert len(answer) == 2 and [r.query for r in answer] == ["the red square", "green"]
    assert answer[1] is list(answer)[1] and answer[-1].query == "green"
    first, second = answer
    assert first.query == "the red square" and second.query == "green"
    assert answer.path == str(path) and answer.model == grounder.name
    assert answer.image.size == scene.size and answer.timing_ms > 0
    assert answer.to_dict(timing=True)["timing_ms"] == round(answer.timing_ms, 2)
    written = answer.save(tmp_path / "out", "scene")
    assert [p.name for p in written] == [
        "scene.annotated.png",
        "scene.crop01.the-red-square.png",
        "scene.crop02.green.png",
    ]
    crops = answer.crops()
    assert [c.size for c in crops] == [Image.open(p).size for p in written[1:]]


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
    raw = sceneloc.Candidates(
        [[-10.0, -5.0, 20.0, 30.0], [200.0, 10.0, 260.0, 40.0], [10, 10, 20, 20], [10, 10, 20, 20]],
        [0.5, 0.9, 0.7, 0.1],
        ["a", "outside", "b", "low"],
    )
    ranked = rank(raw, (100, 50), threshold=0.2, top_k=5)
    assert [c.label for c in ranked] == ["b", "a"]
    assert ranked[1].box == [0.0, 0.0, 20.0, 30.0]
    assert [c.label for c in rank(raw, (100, 50), threshold=0.2, top_k=1)] == ["b"]


@pytest.fixture(scope="module")
def segmenter(sam3_dir):
    return sceneloc.load(str(sam3_dir), device="cpu")


def test_masks_follow_the_ranking_into_results(segmenter, scene):
    (everything,) = segmenter.locate(scene, "the red square", threshold=0.0, top_k=100)
    (best,) = segmenter.locate(scene, "the red square", threshold=0.0, top_k=2)
    assert best.candidates.masks.shape == (2, 96, 160)
    assert np.array_equal(best.candidates.masks, everything.candidates.masks[:2])
    assert np.array_equal(best.best.mask, everything.candidates.masks[0])


def test_masked_crops_and_masks_on_the_wire_only_when_asked(segmenter, scene, tmp_path):
    answer = segmenter.locate(scene, ["the red square", "green"], threshold=0.0, top_k=2)
    first = answer[0]
    cut = first.crop(masked=True)
    assert cut.mode == "RGBA" and cut.size == first.crop().size
    x1, y1 = int(first.box[0]), int(first.box[1])
    inside = first.candidates.masks[0][y1 : y1 + cut.height, x1 : x1 + cut.width]
    assert np.array_equal(np.asarray(cut)[..., 3] > 0, inside)
    assert answer.draw(masks=True).tobytes() != answer.draw().tobytes()
    written = answer.save(tmp_path, "scene", masked=True)
    assert [Image.open(p).mode for p in written] == ["RGB", "RGBA", "RGBA"]

    plain = answer.to_dict()
    assert all("mask" not in c for r in plain["results"] for c in r["candidates"])
    payload = answer.to_dict(masks=True)
    assert json.loads(json.dumps(payload)) == payload
    assert LocateRecord.model_validate(payload).model_dump() == payload
    for result, record in zip(answer, payload["results"]):
        for mask, candidate in zip(result.candidates.masks, record["candidates"], strict=True):
            assert np.array_equal(decode_rle(candidate["mask"]), mask)


def test_an_option_the_model_does_not_take_is_a_one_line_error(owlv2_dir, florence2_dir):
    with pytest.raises(sceneloc.SceneLocError, match="no option max_pixels; its options: none"):
        sceneloc.load(str(owlv2_dir), device="cpu", max_pixels=65536)
    with pytest.raises(sceneloc.SceneLocError, match="its options: max_new_tokens"):
        sceneloc.load(str(florence2_dir), device="cpu", beams=3)
