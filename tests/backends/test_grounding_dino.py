"""Grounding DINO / MM-Grounding-DINO backend against transformers' own reference path."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import ImageOps
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

import sceneloc
from sceneloc.api import rank
from sceneloc.candidates import Candidate, Candidates

QUERIES = ["the red square", "a green circle left of the blue triangle", "blue"]
THRESHOLD = 0.05
TOP_K = 4


def reference(checkpoint, image, query: str) -> Candidates:
    """What the model's own processor and post-processing give for one query asked alone."""
    processor = AutoProcessor.from_pretrained(checkpoint)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(checkpoint).eval()
    inputs = processor(images=image, text=query.lower() + ".", return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    (found,) = processor.post_process_grounded_object_detection(
        outputs, threshold=THRESHOLD, target_sizes=[(image.height, image.width)]
    )
    raw = [Candidate(b.tolist(), float(s), "") for b, s in zip(found["boxes"], found["scores"])]
    return rank(Candidates.from_list(raw), image.size, THRESHOLD, TOP_K)


@pytest.fixture(params=["grounding_dino_dir", "mm_grounding_dino_dir"])
def checkpoint(request):
    return request.getfixturevalue(request.param)


def test_matches_reference_for_each_query_asked_with_others(checkpoint, scene):
    grounder = sceneloc.load(str(checkpoint), device="cpu")
    results = grounder.locate(scene, QUERIES, threshold=THRESHOLD, top_k=TOP_K)
    assert [r.query for r in results] == QUERIES
    for result in results:
        expected = reference(checkpoint, scene, result.query)
        assert expected, "the tiny model should give candidates above the threshold"
        assert len(result.candidates) == len(expected)
        for got, want in zip(result.candidates, expected):
            assert got.box == pytest.approx(want.box, abs=1e-3)
            assert got.score == pytest.approx(want.score, abs=1e-5)


@pytest.mark.parametrize("query_batch_size", [1, 3])
def test_query_alone_equals_query_among_others(grounding_dino_dir, scene, query_batch_size):
    # In float64: the decoder starts from a top-k of the encoder's proposals, and float32
    # rounding, which differs between batch sizes, can swap two proposals that nearly tie.
    grounder = sceneloc.load(
        str(grounding_dino_dir), device="cpu", dtype=torch.float64,
        query_batch_size=query_batch_size,
    )  # fmt: skip
    assert grounder.backend.query_batch_size == query_batch_size
    together = grounder.locate(scene, QUERIES, threshold=0.0, top_k=10)
    for result in together:
        (alone,) = grounder.locate(scene, result.query, threshold=0.0, top_k=10)
        assert len(alone.candidates) == len(result.candidates) == 10
        for got, want in zip(result.candidates, alone.candidates):
            assert got.box == pytest.approx(want.box, abs=1e-3)
            assert got.score == pytest.approx(want.score, abs=1e-5)


@pytest.mark.parametrize("query_batch_size", [1, 8])
def test_image_backbone_runs_once_per_call(grounding_dino_dir, scene, query_batch_size):
    grounder = sceneloc.load(
        str(grounding_dino_dir), device="cpu", query_batch_size=query_batch_size
    )
    backbone_calls, model_calls = [], []
    hooks = [
        grounder.backend.model.model.backbone.conv_encoder.register_forward_hook(
            lambda *a: backbone_calls.append(1)
        ),
        grounder.backend.model.register_forward_hook(lambda *a: model_calls.append(1)),
    ]
    try:
        grounder.locate(scene, [f"object number {i}" for i in range(8)])
    finally:
        for hook in hooks:
            hook.remove()
    assert len(backbone_calls) == 1
    assert len(model_calls) == 8 // query_batch_size


def test_labels_are_words_of_the_query(grounding_dino_dir, scene):
    grounder = sceneloc.load(str(grounding_dino_dir), device="cpu")
    (result,) = grounder.locate(scene, "The Red Square", threshold=0.0)
    for candidate in result.candidates:
        assert "[" not in candidate.label
        assert set(candidate.label.split()) <= {"the", "red", "square"}


def test_threads_sharing_the_model_each_keep_their_own_image(grounding_dino_dir, scene):
    """Server workers share one model: a call's cached image features are its own."""
    backend = sceneloc.load(str(grounding_dino_dir), device="cpu").backend
    module = backend.model.model.backbone
    pixels = {
        name: backend.processor.image_processor(images=image, return_tensors="pt")
        for name, image in (("scene", scene), ("flipped", ImageOps.mirror(scene)))
    }

    def features(name: str) -> torch.Tensor:
        (first, _), *_ = module(pixels[name]["pixel_values"], pixels[name]["pixel_mask"])[0]
        return first

    with torch.no_grad():
        expected = {name: features(name) for name in pixels}  # not sharing: computed each time
        other_has_cached, main_has_asked = threading.Event(), threading.Event()

        def other_call() -> torch.Tensor:
            with torch.no_grad(), backend.backbone.shared():
                features("flipped")
                other_has_cached.set()
                main_has_asked.wait(timeout=60)
                return features("scene")  # its cache holds the flipped image, not the scene

        with ThreadPoolExecutor(1) as pool, backend.backbone.shared():
            other = pool.submit(other_call)
            other_has_cached.wait(timeout=60)
            assert torch.equal(features("scene"), expected["scene"])
            main_has_asked.set()
            assert torch.equal(other.result(), expected["flipped"])
        assert "forward" not in vars(module)  # the module is as transformers built it
        assert torch.equal(features("flipped"), expected["flipped"])
