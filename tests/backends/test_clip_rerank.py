"""CLIP-rerank backend against the detector's and CLIP's own reference paths, query by query."""

from __future__ import annotations

import json

import pytest
import torch
from matching import assert_alone_equals_together, assert_same
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForObjectDetection,
    CLIPModel,
    CLIPProcessor,
)

import sceneloc
from sceneloc.api import rank
from sceneloc.backends.clip_rerank import DEFAULT_DETECTOR, square_crop
from sceneloc.boxes import clip_box, is_inside
from sceneloc.candidates import Candidate, Candidates

QUERIES = ["the red square", "a green circle left of the blue triangle", "blue"]
MAX_PROPOSALS = 12
DETECTOR_THRESHOLD = 0.36
THRESHOLD = 0.08
TOP_K = 4


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """A pipeline directory holding its CLIP, naming a detector elsewhere by absolute path."""
    from checkpoints.clip import build_clip, build_pipeline, build_rt_detr

    directory = tmp_path_factory.mktemp("clip-rerank")
    return build_pipeline(
        directory,
        clip=build_clip(directory / "clip"),
        detector=build_rt_detr(tmp_path_factory.mktemp("detector")),
        max_proposals=MAX_PROPOSALS,
        detector_threshold=DETECTOR_THRESHOLD,
    )


@pytest.fixture(scope="module")
def textured(scene) -> Image.Image:
    """The shared scene over a gradient, so that no two proposals' crops are alike (ties)."""
    gradient = Image.linear_gradient("L").resize(scene.size).convert("RGB")
    return Image.blend(scene, gradient, 0.4)


@pytest.fixture(scope="module")
def grounder(pipeline_dir):
    return sceneloc.load(str(pipeline_dir), device="cpu")


def reference_proposals(detector, image, limit: int | None = MAX_PROPOSALS) -> list[list[float]]:
    """The detector's own post-processing; then distinct boxes in the image, best first."""
    processor = AutoImageProcessor.from_pretrained(detector)
    model = AutoModelForObjectDetection.from_pretrained(detector).eval()
    with torch.no_grad():
        outputs = model(**processor(images=image, return_tensors="pt"))
    (found,) = processor.post_process_object_detection(
        outputs, threshold=DETECTOR_THRESHOLD, target_sizes=[(image.height, image.width)]
    )
    ranked = sorted(zip(found["scores"].tolist(), found["boxes"].tolist()), key=lambda p: -p[0])
    boxes: list[list[float]] = []
    for _, box in ranked:
        if box not in boxes and is_inside(box, *image.size):
            boxes.append(box)
    return boxes[:limit]


@pytest.fixture(scope="module")
def detector_of_pipeline(pipeline_dir) -> str:
    return json.loads((pipeline_dir / "config.json").read_text())["detector"]


@pytest.fixture(scope="module")
def proposals(detector_of_pipeline, textured) -> list[list[float]]:
    return reference_proposals(detector_of_pipeline, textured)


def reference(clip, boxes, image, query: str, threshold: float, top_k: int) -> Candidates:
    """CLIP's own forward for one query alone against every proposal's crop, softmax over crops."""
    processor = CLIPProcessor.from_pretrained(clip)
    model = CLIPModel.from_pretrained(clip).eval()
    fill = tuple(round(255 * m) for m in processor.image_processor.image_mean)
    crops = [square_crop(image, box, fill) for box in boxes]
    inputs = processor(text=[query], images=crops, return_tensors="pt")
    with torch.no_grad():
        probs = model(**inputs).logits_per_text[0].softmax(-1)
    raw = [Candidate(box, float(p), query) for box, p in zip(boxes, probs)]
    return rank(Candidates.from_list(raw), image.size, threshold, top_k)


def test_pipeline_directory_names_both_models(pipeline_dir, grounder):
    config = json.loads((pipeline_dir / "config.json").read_text())
    assert config["clip"] == "clip"  # relative to the directory
    backend = grounder.backend
    assert backend.detector_name == config["detector"]
    assert (backend.max_proposals, backend.detector_threshold) == (
        MAX_PROPOSALS,
        DETECTOR_THRESHOLD,
    )


def test_matches_reference_for_each_query_asked_with_others(
    pipeline_dir, grounder, textured, proposals
):
    results = grounder.locate(textured, QUERIES, threshold=THRESHOLD, top_k=TOP_K)
    assert [r.query for r in results] == QUERIES
    for result in results:
        expected = reference(
            pipeline_dir / "clip", proposals, textured, result.query, THRESHOLD, TOP_K
        )
        assert expected, "the tiny models should give candidates above the threshold"
        assert_same(result.candidates, expected)


def test_every_proposal_is_scored_once_and_scores_sum_to_one(
    detector_of_pipeline, grounder, textured, proposals
):
    # The detector gives some boxes twice (under two classes) and more than the cap.
    assert len(reference_proposals(detector_of_pipeline, textured, limit=None)) > MAX_PROPOSALS
    for result in grounder.locate(textured, QUERIES, threshold=0.0, top_k=100):
        boxes = sorted(c.box for c in result.candidates)
        assert boxes == sorted(clip_box(box, *textured.size) for box in proposals)
        assert len({tuple(box) for box in boxes}) == MAX_PROPOSALS
        assert sum(c.score for c in result.candidates) == pytest.approx(1.0, abs=1e-5)


def test_query_alone_equals_query_among_others(grounder, textured):
    together = grounder.locate(textured, QUERIES, threshold=0.0, top_k=100)
    for result in together:
        (alone,) = grounder.locate(textured, result.query, threshold=0.0, top_k=100)
        assert alone.candidates
        assert_same(result.candidates, alone.candidates)


def test_plain_clip_with_detector_keyword(clip_dir, detector_dir, grounder, textured):
    """The same seeds built the pipeline's models, so the answers are the pipeline's."""
    plain = sceneloc.load(
        str(clip_dir),
        device="cpu",
        detector=str(detector_dir),
        max_proposals=MAX_PROPOSALS,
        detector_threshold=DETECTOR_THRESHOLD,
    )
    assert plain.backend.detector_name == str(detector_dir)
    for got, want in zip(
        plain.locate(textured, QUERIES, threshold=THRESHOLD, top_k=TOP_K),
        grounder.locate(textured, QUERIES, threshold=THRESHOLD, top_k=TOP_K),
    ):
        assert got.candidates
        assert_same(got.candidates, want.candidates)


def test_keywords_override_the_pipeline_settings(pipeline_dir, textured):
    grounder = sceneloc.load(str(pipeline_dir), device="cpu", max_proposals=3)
    assert grounder.backend.max_proposals == 3
    assert grounder.backend.detector_threshold == DETECTOR_THRESHOLD
    (result,) = grounder.locate(textured, "blue", threshold=0.0, top_k=100)
    assert len(result.candidates) == 3
    with pytest.raises(sceneloc.SceneLocError, match="at least 1"):
        sceneloc.load(str(pipeline_dir), device="cpu", max_proposals=0)


def test_plain_clip_uses_the_default_detector(clip_dir):
    # Offline, the default detector cannot be fetched: the error names it.
    with pytest.raises(sceneloc.ModelNotFoundError, match=DEFAULT_DETECTOR):
        sceneloc.load(str(clip_dir), device="cpu")


def test_image_work_done_once_per_call(pipeline_dir, textured):
    grounder = sceneloc.load(str(pipeline_dir), device="cpu", crop_batch_size=5)
    backend = grounder.backend
    calls: dict[str, int] = {"detector": 0, "vision": 0, "text": 0}

    def count(name):
        def hook(*args):
            calls[name] += 1

        return hook

    hooks = [
        backend.detector.register_forward_hook(count("detector")),
        backend.clip.vision_model.register_forward_hook(count("vision")),
        backend.clip.text_model.register_forward_hook(count("text")),
    ]
    try:
        results = grounder.locate(textured, [f"object number {i}" for i in range(8)], threshold=0.0)
    finally:
        for hook in hooks:
            hook.remove()
    # 12 crops, 5 at a time, whatever the number of queries.
    assert calls == {"detector": 1, "vision": 3, "text": 1}
    assert all(r.candidates for r in results)


def test_crop_batches_do_not_change_results(pipeline_dir, grounder, textured):
    batched = sceneloc.load(str(pipeline_dir), device="cpu", crop_batch_size=5)
    for a, b in zip(
        grounder.locate(textured, QUERIES, threshold=0.0, top_k=100),
        batched.locate(textured, QUERIES, threshold=0.0, top_k=100),
    ):
        assert_same(a.candidates, b.candidates)


def test_boxes_lie_within_the_image(grounder, textured):
    width, height = textured.size
    for result in grounder.locate(textured, QUERIES, threshold=0.0, top_k=100):
        assert len(result.candidates) > 0, result.query
        for candidate in result.candidates:
            x1, y1, x2, y2 = candidate.box
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_square_crop_pads_around_the_box():
    image = Image.new("RGB", (40, 30), (255, 0, 0))
    crop = square_crop(image, [30.2, -5.0, 50.0, 9.6], fill=(1, 2, 3))
    # Clipped to x 30..40, y 0..10: a 10 px square, all image.
    assert crop.size == (10, 10) and crop.getpixel((0, 0)) == (255, 0, 0)
    crop = square_crop(image, [0.0, 10.0, 20.0, 15.0], fill=(1, 2, 3))
    assert crop.size == (20, 20)
    assert crop.getpixel((10, 10)) == (255, 0, 0)
    assert crop.getpixel((0, 0)) == crop.getpixel((19, 19)) == (1, 2, 3)
    assert square_crop(image, [5.0, 5.0, 5.2, 5.1], fill=(1, 2, 3)).size == (1, 1)


def test_missing_models(tmp_path, clip_dir):
    with pytest.raises(sceneloc.ModelNotFoundError):
        sceneloc.load(str(tmp_path / "no-such-model"), device="cpu")
    config = {"model_type": "sceneloc-clip-rerank", "clip": str(clip_dir), "detector": "nothing"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(sceneloc.ModelNotFoundError, match="nothing"):
        sceneloc.load(str(tmp_path), device="cpu")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sceneloc-clip-rerank"}))
    with pytest.raises(sceneloc.ModelNotFoundError, match="names no 'clip' model"):
        sceneloc.load(str(tmp_path), device="cpu")


# A learned head (sceneloc finetune's) scores the proposals when the pipeline has one.


def random_head(directory, box_features: bool = True, seed: int = 0):
    """A head with every weight random (a fresh one would rank as similarity does)."""
    from sceneloc.backends.clip_head import ClipRerankHead, HeadConfig

    torch.manual_seed(seed)
    head = ClipRerankHead(HeadConfig(embed_dim=32, hidden_size=16, box_features=box_features))
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.normal_(0.0, 0.5)
    head.save(directory)
    return head.eval()


@pytest.fixture(scope="module")
def headed_dir(tmp_path_factory, pipeline_dir):
    """The pipeline's models again, with a head in ``head/``."""
    config = json.loads((pipeline_dir / "config.json").read_text())
    directory = tmp_path_factory.mktemp("clip-rerank-head")
    config["clip"] = str(pipeline_dir / "clip")
    config["head"] = "head"
    (directory / "config.json").write_text(json.dumps(config))
    random_head(directory / "head")
    return directory


def reference_head_scores(clip, head_dir, boxes, image, query: str) -> list[float]:
    """CLIP's own embeddings of the crops and the query, through the saved head, sigmoid."""
    from sceneloc.backends.clip_head import ClipRerankHead, box_features

    processor = CLIPProcessor.from_pretrained(clip)
    model = CLIPModel.from_pretrained(clip).eval()
    head = ClipRerankHead.load(head_dir)
    fill = tuple(round(255 * m) for m in processor.image_processor.image_mean)
    crops = [square_crop(image, box, fill) for box in boxes]
    inputs = processor(text=[query], images=crops, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
        text = outputs.text_embeds.expand(len(boxes), -1)
        places = box_features(torch.tensor(boxes), *image.size)
        return head(outputs.image_embeds, text, places).sigmoid().tolist()


def test_head_scores_each_proposal(pipeline_dir, headed_dir, textured, proposals):
    grounder = sceneloc.load(str(headed_dir), device="cpu")
    assert grounder.backend.head is not None
    for result in grounder.locate(textured, QUERIES, threshold=0.0, top_k=100):
        want = reference_head_scores(
            pipeline_dir / "clip", headed_dir / "head", proposals, textured, result.query
        )
        raw = [Candidate(box, p, result.query) for box, p in zip(proposals, want)]
        expected = rank(Candidates.from_list(raw), textured.size, 0.0, 100)
        assert_same(result.candidates, expected)
        # Probabilities box by box, not a share among the proposals.
        assert sum(c.score for c in result.candidates) != pytest.approx(1.0, abs=1e-3)


def test_head_query_alone_equals_query_among_others(headed_dir, textured):
    assert_alone_equals_together(sceneloc.load(str(headed_dir), device="cpu"), textured,
                                 QUERIES, top_k=100)  # fmt: skip


def test_without_a_head_similarity_scores(pipeline_dir, headed_dir, grounder, textured):
    assert grounder.backend.head is None  # the pipeline names none
    off = sceneloc.load(str(headed_dir), device="cpu", head="none")
    assert off.backend.head is None
    for got, want in zip(
        off.locate(textured, QUERIES, threshold=0.0, top_k=100),
        grounder.locate(textured, QUERIES, threshold=0.0, top_k=100),
    ):
        assert_same(got.candidates, want.candidates)


def test_head_keyword_gives_a_pipeline_a_head(pipeline_dir, headed_dir, textured):
    given = sceneloc.load(str(pipeline_dir), device="cpu", head=str(headed_dir / "head"))
    named = sceneloc.load(str(headed_dir), device="cpu")
    for got, want in zip(
        given.locate(textured, QUERIES, threshold=0.0, top_k=100),
        named.locate(textured, QUERIES, threshold=0.0, top_k=100),
    ):
        assert_same(got.candidates, want.candidates)


def test_head_without_box_features(pipeline_dir, tmp_path, textured, proposals):
    random_head(tmp_path / "head", box_features=False)
    grounder = sceneloc.load(str(pipeline_dir), device="cpu", head=str(tmp_path / "head"))
    (result,) = grounder.locate(textured, "blue", threshold=0.0, top_k=100)
    want = reference_head_scores(pipeline_dir / "clip", tmp_path / "head", proposals, textured,
                                 "blue")  # fmt: skip
    assert sorted(c.score for c in result.candidates) == pytest.approx(sorted(want), abs=1e-5)


def test_unreadable_head(pipeline_dir, tmp_path):
    with pytest.raises(sceneloc.ModelNotFoundError, match="re-ranking head"):
        sceneloc.load(str(pipeline_dir), device="cpu", head=str(tmp_path / "nothing"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(sceneloc.ModelNotFoundError):
        sceneloc.load(str(pipeline_dir), device="cpu", head=str(tmp_path))
