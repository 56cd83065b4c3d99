"""SAM 3 backend against transformers' own reference path, one query at a time.

Where torchvision works the reference is transformers' ``Sam3Processor`` end to end; here
it does not, so the reference takes transformers' tokenizer call and full forward pass with
the torch image processor, which the tests at the end pin to ``Sam3ImageProcessor``'s
definition (and to the processor itself where torchvision works).
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from matching import assert_same, forward_counts
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer
from transformers.models.sam3.modeling_sam3 import Sam3ImageSegmentationOutput

import sceneloc
from sceneloc.api import rank
from sceneloc.backends.sam3 import (
    MASK_THRESHOLD,
    TEXT_LENGTH,
    Sam3TorchImageProcessor,
    load_image_processor,
    torchvision_works,
)
from sceneloc.candidates import Candidates
from sceneloc.registry import Capability, resolve

QUERIES = ["the red square", "a green circle", "blue"]
TOP_K = 4


@pytest.fixture(scope="module", params=["sam3_dir", "sam3_lite_dir"])
def checkpoint(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def grounder(checkpoint):
    return sceneloc.load(str(checkpoint), device="cpu")


def reference(checkpoint, image: Image.Image, query: str, threshold: float, top_k: int):
    """The model card's usage for one query alone: text and pixels, forward pass on the
    pixels, ``post_process_instance_segmentation`` at the original size."""
    if torchvision_works():
        from transformers import Sam3Processor

        processor = Sam3Processor.from_pretrained(checkpoint)
        inputs = processor(images=image, text=query, return_tensors="pt")
        inputs.pop("original_sizes")
    else:
        processor = Sam3TorchImageProcessor.from_pretrained(checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        # What Sam3Processor.__call__ does with the text.
        text = tokenizer(query, padding="max_length", max_length=32, return_tensors="pt")
        inputs = {"pixel_values": processor(images=image)["pixel_values"], **text}
    model = AutoModel.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        outputs = model(**inputs)
    (found,) = processor.post_process_instance_segmentation(
        outputs, threshold=threshold, mask_threshold=0.5, target_sizes=[(image.height, image.width)]
    )
    raw = Candidates.of(found["boxes"], found["scores"], query, masks=found["masks"])
    return rank(raw, image.size, threshold, top_k)


def test_matches_reference_for_each_query_asked_with_others(checkpoint, grounder, scene):
    # A threshold amid the tiny model's scores, so that it keeps some candidates, drops others.
    every = [reference(checkpoint, scene, query, 0.0, 100) for query in QUERIES]
    threshold = float(np.median(np.concatenate([found.scores for found in every])))
    results = grounder.locate(scene, QUERIES, threshold=threshold, top_k=TOP_K)
    assert [r.query for r in results] == QUERIES
    for result in results:
        expected = reference(checkpoint, scene, result.query, threshold, TOP_K)
        assert expected, "the tiny model should give candidates above the threshold"
        assert_same(result.candidates, expected, score_tolerance=1e-6)
    assert sum(len(r.candidates) for r in results) < sum(min(len(f), TOP_K) for f in every)


def test_every_candidate_has_a_mask_of_the_image(grounder, scene):
    for result in grounder.locate(scene, QUERIES, threshold=0.0, top_k=100):
        masks = result.candidates.masks
        assert masks.dtype == bool and masks.shape == (len(result.candidates), 96, 160)
        assert masks.any(axis=(1, 2)).any(), "the tiny model should mark some pixels"


def test_batched_queries_answer_as_if_alone(checkpoint, scene):
    batched = sceneloc.load(str(checkpoint), device="cpu", query_batch_size=3)
    alone = sceneloc.load(str(checkpoint), device="cpu")
    for together, single in zip(
        batched.locate(scene, QUERIES, threshold=0.0, top_k=100),
        alone.locate(scene, QUERIES, threshold=0.0, top_k=100),
    ):
        got, want = together.candidates, single.candidates
        assert len(got) == len(want) > 0
        assert got.boxes == pytest.approx(want.boxes, abs=1e-4)
        assert got.scores == pytest.approx(want.scores, abs=1e-5)
        # A batch's float rounding may move a pixel whose probability is at the threshold.
        assert (got.masks == want.masks).mean() > 0.999


@pytest.mark.parametrize("query_batch_size", [1, 4])
def test_image_encoded_once_per_call(checkpoint, scene, query_batch_size):
    grounder = sceneloc.load(str(checkpoint), device="cpu", query_batch_size=query_batch_size)
    model = grounder.backend.model
    with forward_counts(vision=model.vision_encoder, text=model.text_encoder) as calls:
        results = grounder.locate(scene, [f"object number {i}" for i in range(8)], threshold=0.0)
    assert calls == {"vision": 1, "text": 8 // query_batch_size}
    assert all(r.candidates for r in results)


def test_long_query_is_cut_with_a_warning(grounder, scene, caplog):
    long = " ".join(["the red square left of the blue triangle"] * 5)
    with caplog.at_level(logging.WARNING, logger="sceneloc.backends.base"):
        (result,) = grounder.locate(scene, long, threshold=0.0)
    assert f"reads the first {TEXT_LENGTH} only" in caplog.text
    assert result.candidates


def test_registered_with_masks(sam3_lite_dir):
    family = resolve("sam3").family
    assert resolve("sam3").checkpoint == "facebook/sam3"
    assert resolve("sam3-lite").checkpoint == "yonigozlan/sam3-litetext-s0"
    assert resolve(str(sam3_lite_dir)).family is family
    assert {Capability.MASKS, Capability.IMAGE_ENCODED_ONCE} <= family.capabilities
    assert family.settings.default_threshold == 0.5


def test_published_layout_loads_its_image_detector(sam3_dir, tmp_path, scene):
    """facebook/sam3 is saved as the video model: a ``sam3_video`` config holding the
    detector's, weights under ``detector_model.`` beside the tracker's."""
    published = shutil.copytree(sam3_dir, tmp_path / "sam3-video")
    detector = json.loads((sam3_dir / "config.json").read_text())
    (published / "config.json").write_text(
        json.dumps({"model_type": "sam3_video", "detector_config": detector})
    )
    weights = {
        f"detector_model.{k}": v for k, v in load_file(sam3_dir / "model.safetensors").items()
    }
    weights["tracker_model.memory_attention.weight"] = torch.zeros(3)
    save_file(weights, published / "model.safetensors")
    expected = sceneloc.load(str(sam3_dir), device="cpu").locate(scene, QUERIES, threshold=0.0)
    got = sceneloc.load(str(published), device="cpu").locate(scene, QUERIES, threshold=0.0)
    for a, b in zip(got, expected):
        assert_same(a.candidates, b.candidates, score_tolerance=1e-6)


def test_missing_checkpoint_says_how_to_get_the_gated_weights(tmp_path, sam3_dir):
    # A directory with SAM 3's config.json but no weights, as after an unauthorised download.
    (tmp_path / "config.json").write_text((sam3_dir / "config.json").read_text())
    with pytest.raises(sceneloc.ModelNotFoundError, match="cannot load") as error:
        sceneloc.load(str(tmp_path), device="cpu")
    message = str(error.value)
    assert "accept the licence" in message and "HF_TOKEN" in message
    assert "local directory" in message and "\n" not in message


# --- the image processor without torchvision ---------------------------------------------------


def test_torch_preprocessing_resizes_rescales_and_normalises():
    processor = Sam3TorchImageProcessor()  # Sam3ImageProcessor's defaults
    image = Image.new("RGB", (64, 40), (255, 0, 51))
    inputs = processor(images=image)
    assert inputs["pixel_values"].shape == (1, 3, 1008, 1008)
    assert inputs["pixel_values"].dtype == torch.float32
    assert inputs["original_sizes"].tolist() == [[40, 64]]
    # Mean and std 0.5 of pixels scaled to [0, 1]: 255 -> 1, 0 -> -1, 51 -> 51/127.5 - 1.
    colour = inputs["pixel_values"][0, :, 500, 700]
    assert colour.tolist() == pytest.approx([1.0, -1.0, 51 / 127.5 - 1], abs=1e-7)


def test_torch_preprocessing_resizes_as_an_antialiased_bilinear_filter(sam3_dir, scene):
    """Antialiased bilinear resizing is the filter PIL's BILINEAR resize applies; in uint8
    the two may differ by one level of rounding."""
    processor = Sam3TorchImageProcessor.from_pretrained(sam3_dir)
    assert processor.size == (224, 224)
    pixels = processor(images=scene)["pixel_values"][0]
    levels = (pixels * 127.5 + 127.5).round().permute(1, 2, 0).numpy()
    pil = np.asarray(scene.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float64)
    assert np.abs(levels - pil).max() <= 1
    assert processor(images=scene.resize((224, 224)))["pixel_values"].shape == (1, 3, 224, 224)


def test_torch_post_processing_is_the_processors_definition():
    """Scores are instance x presence probabilities, kept above the threshold; boxes scale
    from the square to ``(height, width)``; mask probabilities resize bilinearly, then bin."""
    strong = 10.0
    quadrants = torch.tensor([[strong, -strong], [-strong, strong]])
    outputs = Sam3ImageSegmentationOutput(
        pred_logits=torch.tensor([[0.0, 2.0, -3.0]]),
        pred_boxes=torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.5, 0.9], [0, 0, 0, 0]]]),
        pred_masks=torch.stack([quadrants, -quadrants, quadrants])[None],
        presence_logits=torch.tensor([[np.log(3.0)]]),
    )
    processor = Sam3TorchImageProcessor()
    (found,) = processor.post_process_instance_segmentation(
        outputs, threshold=0.375, mask_threshold=MASK_THRESHOLD, target_sizes=[(4, 8)]
    )
    # sigmoid(0) * 0.75 = 0.375 is not above 0.375; sigmoid(2) * 0.75 is.
    assert found["scores"].tolist() == pytest.approx([0.75 / (1 + np.exp(-2.0))])
    assert found["boxes"].numpy() == pytest.approx(np.array([[0.8, 0.8, 4.0, 3.6]]))
    # -quadrants upsampled 2x2 -> 4x8: the top-right and bottom-left quarters.
    top, bottom = [False] * 4 + [True] * 4, [True] * 4 + [False] * 4
    assert found["masks"].tolist() == [[top, top, bottom, bottom]]
    (unscaled,) = processor.post_process_instance_segmentation(outputs, threshold=0.0)
    assert torch.equal(unscaled["boxes"], outputs.pred_boxes[0])
    assert unscaled["masks"].shape == (3, 2, 2)
    (none,) = processor.post_process_instance_segmentation(outputs, 0.9, target_sizes=[(4, 8)])
    assert len(none["scores"]) == len(none["masks"]) == 0


@pytest.mark.skipif(not torchvision_works(), reason="torchvision does not load here")
def test_torch_twin_equals_transformers_processor(sam3_dir, scene):
    from transformers import Sam3ImageProcessor

    processor = load_image_processor(str(sam3_dir))
    assert isinstance(processor, Sam3ImageProcessor)
    twin = Sam3TorchImageProcessor.from_pretrained(sam3_dir)
    want = processor(images=scene, return_tensors="pt")["pixel_values"]
    assert torch.equal(twin(images=scene)["pixel_values"], want)
