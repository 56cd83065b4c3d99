"""OmDet-Turbo backend against transformers' own processor, forward and post-processing.

transformers' post-processing takes ``batched_nms`` from torchvision, which is not usable
here; the reference gets torchvision's documented NMS written in plain torch instead, and
everything else (inputs, forward, top-k, threshold, scaling, clipping) is transformers' own.
For the checkpoint with timm's Swin, the reference is transformers' OmDet-Turbo as it runs
with timm installed: its backbone's output is timm's feature maps (computed by
``checkpoints.timm_swin``), normalised by OmDet-Turbo's own layer norms.
"""

from __future__ import annotations

import importlib
import json
import shutil

import pytest
import torch
from matching import assert_alone_equals_together, assert_same, forward_counts
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from transformers import (
    AutoModelForZeroShotObjectDetection,
    OmDetTurboConfig,
    OmDetTurboForObjectDetection,
    SwinBackbone,
)
from transformers.modeling_outputs import BackboneOutput

import sceneloc
from checkpoints.omdet_turbo import (
    IMAGE_MEAN,
    IMAGE_STD,
    TIMM_OUT_INDICES,
    TIMM_PREFIX,
    TIMM_SWIN,
    build_omdet_turbo_timm,
    image_processor,
    processor,
    timm_weights,
)
from checkpoints.timm_swin import timm_swin_features
from sceneloc.api import rank
from sceneloc.candidates import Candidates
from sceneloc.registry import get_backend, list_models

# The module itself: transformers' lazy package hands out a placeholder without torchvision.
processing_omdet_turbo = importlib.import_module(
    "transformers.models.omdet_turbo.processing_omdet_turbo"
)

QUERIES = ["the red square", "a green circle left of the blue triangle", "blue"]
THRESHOLD = 0.3
TOP_K = 10


def torchvision_batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """``torchvision.ops.batched_nms`` as documented: indices kept, best score first; a box
    is dropped when a kept box of its class overlaps it by IoU > ``iou_threshold``."""
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(-1)
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(-1)
    iou = intersection / (areas[:, None] + areas[None, :] - intersection)
    kept: list[int] = []
    for index in scores.argsort(descending=True).tolist():
        if all(classes[j] != classes[index] or iou[index, j] <= iou_threshold for j in kept):
            kept.append(index)
    return torch.tensor(kept, dtype=torch.long)


def transformers_reference(model: OmDetTurboForObjectDetection, directory, monkeypatch):
    """One query asked alone, the model card's way: classes ``[query]``, transformers' own
    processor, forward and post-processing; boxes ranked as sceneloc ranks them."""
    monkeypatch.setattr(
        processing_omdet_turbo, "batched_nms", torchvision_batched_nms, raising=False
    )
    own = processor(directory)
    dtype = next(model.parameters()).dtype

    def answer(
        image: Image.Image,
        query: str,
        threshold: float,
        task: str | None = None,
        nms_threshold: float = 0.3,
    ) -> Candidates:
        inputs = own(images=image, text=[query], task=task, return_tensors="pt")
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        with torch.no_grad():
            outputs = model(**inputs)
        (found,) = own.post_process_grounded_object_detection(
            outputs,
            text_labels=[query],
            threshold=threshold,
            target_sizes=[(image.height, image.width)],
            nms_threshold=nms_threshold,
        )
        assert set(found["text_labels"]) <= {query}
        return rank(
            Candidates.of(found["boxes"], found["scores"], query), image.size, threshold, 100
        )

    return answer


@pytest.fixture
def reference(omdet_turbo_dir, monkeypatch):
    model = AutoModelForZeroShotObjectDetection.from_pretrained(omdet_turbo_dir).eval()
    return transformers_reference(model, omdet_turbo_dir, monkeypatch)


class TimmSwinFeatures(nn.Module):
    """What transformers' ``TimmBackbone`` returns for timm's ``features_only`` Swin:
    the chosen stages' feature maps, NHWC, not normalised."""

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.weights = weights

    def forward(self, pixel_values: torch.Tensor) -> BackboneOutput:
        features = timm_swin_features(
            self.weights, pixel_values, TIMM_OUT_INDICES, TIMM_SWIN["window"]
        )
        return BackboneOutput(feature_maps=tuple(features))


@pytest.fixture(scope="module")
def omdet_turbo_timm_dir(tmp_path_factory):
    return build_omdet_turbo_timm(tmp_path_factory.mktemp("omdet-turbo-timm"))


@pytest.fixture
def timm_reference(omdet_turbo_timm_dir, monkeypatch):
    """transformers' OmDet-Turbo with timm's Swin, in float64: the checkpoint's other
    weights, its config (OmDet-Turbo's layer norms on), timm's features as its backbone's."""
    config = json.loads((omdet_turbo_timm_dir / "config.json").read_text())
    timm_keys = ("backbone", "backbone_kwargs", "use_timm_backbone")
    # Any backbone to build the model with: it is replaced by timm's features below.
    placeholder = dict(model_type="swin", embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                       out_indices=[2, 3, 4])  # fmt: skip
    config = {k: v for k, v in config.items() if k not in timm_keys} | {
        "backbone_config": placeholder
    }
    model = OmDetTurboForObjectDetection(OmDetTurboConfig.from_dict(config)).eval()
    weights = load_file(omdet_turbo_timm_dir / "model.safetensors")
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in weights.items() if not k.startswith(TIMM_PREFIX)}, strict=False
    )
    assert not unexpected
    assert all(key.startswith("vision_backbone.vision_backbone.") for key in missing)
    model.vision_backbone.vision_backbone = TimmSwinFeatures(
        {k: v.double() for k, v in timm_weights(omdet_turbo_timm_dir).items()}
    )
    return transformers_reference(model.double(), omdet_turbo_timm_dir, monkeypatch)


@pytest.fixture(scope="module")
def grounder(omdet_turbo_dir):
    return sceneloc.load(str(omdet_turbo_dir), device="cpu")


def test_registered_with_the_model_cards_threshold():
    family = get_backend("omdet-turbo")
    assert family.settings.default_threshold == 0.3
    (model,) = [m for m in list_models() if m.family is family]
    assert (model.name, model.checkpoint) == ("omdet-turbo", "omlab/omdet-turbo-swin-tiny-hf")


def test_matches_reference_for_each_query_asked_with_others(grounder, reference, scene):
    results = grounder.locate(scene, QUERIES, threshold=THRESHOLD, top_k=TOP_K)
    assert [r.query for r in results] == QUERIES
    for result in results:
        expected = reference(scene, result.query, THRESHOLD).top_k(TOP_K)
        assert expected, "the tiny model should give candidates above the threshold"
        assert_same(result.candidates, expected)


def test_default_threshold_is_the_processors(grounder, reference, scene):
    (result,) = grounder.locate(scene, "blue", top_k=100)
    assert_same(result.candidates, reference(scene, "blue", 0.3))


def test_nms_threshold_option(omdet_turbo_dir, reference, scene):
    """Every one of the 30 decoder boxes is kept when NMS drops nothing; NMS drops some."""
    kept_all = sceneloc.load(str(omdet_turbo_dir), device="cpu", nms_threshold=1.0)
    (everything,) = kept_all.locate(scene, "blue", threshold=0.0, top_k=100)
    assert len(everything.candidates) == 30
    assert_same(everything.candidates, reference(scene, "blue", 0.0, nms_threshold=1.0))
    (default,) = sceneloc.load(str(omdet_turbo_dir), device="cpu").locate(
        scene, "blue", threshold=0.0, top_k=100
    )
    assert 0 < len(default.candidates) < 30
    assert_same(default.candidates, reference(scene, "blue", 0.0))


def test_task_sentence_option(omdet_turbo_dir, reference, scene):
    sentence = "Find {query} in the picture."
    grounder = sceneloc.load(str(omdet_turbo_dir), device="cpu", task_sentence=sentence)
    (result,) = grounder.locate(scene, "the red square", threshold=0.0, top_k=100)
    expected = reference(scene, "the red square", 0.0, task="Find the red square in the picture.")
    assert_same(result.candidates, expected)
    default = reference(scene, "the red square", 0.0)
    assert result.candidates.scores.tolist() != default.scores.tolist()  # the task is read


@pytest.mark.parametrize("query_batch_size", [1, 3])
def test_query_alone_equals_query_among_others(omdet_turbo_dir, scene, query_batch_size):
    # In float64: the decoder starts from a top-k of the encoder's proposals, and float32
    # rounding, which differs between batch sizes, could swap two proposals that nearly tie.
    grounder = sceneloc.load(
        str(omdet_turbo_dir), device="cpu", dtype=torch.float64,
        query_batch_size=query_batch_size,
    )  # fmt: skip
    assert_alone_equals_together(grounder, scene, QUERIES, top_k=100)


@pytest.mark.parametrize("query_batch_size", [1, 8])
def test_image_encoded_once_per_call(omdet_turbo_dir, scene, query_batch_size):
    grounder = sceneloc.load(str(omdet_turbo_dir), device="cpu", query_batch_size=query_batch_size)
    model = grounder.backend.model
    parts = {"backbone": model.vision_backbone, "encoder": model.encoder, "decoder": model.decoder}
    with forward_counts(**parts) as calls:
        results = grounder.locate(scene, [f"object number {i}" for i in range(8)], threshold=0.0)
    assert calls == {"backbone": 1, "encoder": 1, "decoder": 8 // query_batch_size}
    assert all(r.candidates for r in results)


def test_inputs_are_the_processors(omdet_turbo_dir, grounder, scene):
    """The backend's own tokens and pixels are exactly what transformers' processor makes."""
    backend = grounder.backend
    inputs = processor(omdet_turbo_dir)(images=scene, text=["blue"], return_tensors="pt")
    classes, tasks = backend._tokens(["blue"]), backend._tokens([backend.task_sentence_for("blue")])
    assert torch.equal(classes["input_ids"], inputs["classes_input_ids"])
    assert torch.equal(classes["attention_mask"], inputs["classes_attention_mask"])
    assert torch.equal(tasks["input_ids"], inputs["tasks_input_ids"])
    assert torch.equal(tasks["attention_mask"], inputs["tasks_attention_mask"])
    pixels = backend.image_processor(images=scene, return_tensors="pt")["pixel_values"]
    assert torch.equal(pixels, inputs["pixel_values"])


def test_released_image_processor_settings_resize_to_a_square_on_the_0_255_scale():
    """The released preprocessing (a 640 x 640 resize, 0-255 mean and std) on a known image."""
    colour = (200, 100, 50)
    image = Image.new("RGB", (1280, 720), colour)
    pixels = image_processor(640)(images=image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 640, 640)
    expected = [(value - mean) / std for value, mean, std in zip(colour, IMAGE_MEAN, IMAGE_STD)]
    for channel, value in enumerate(expected):
        assert torch.allclose(pixels[0, channel], torch.tensor(value), atol=1e-5)


def test_missing_checkpoint(tmp_path, omdet_turbo_dir):
    with pytest.raises(sceneloc.ModelNotFoundError):
        sceneloc.load(str(tmp_path / "no-such-model"), device="cpu")
    # A directory with OmDet-Turbo's config.json but no weights nor processor files.
    (tmp_path / "config.json").write_text((omdet_turbo_dir / "config.json").read_text())
    with pytest.raises(sceneloc.ModelNotFoundError, match="cannot load"):
        sceneloc.load(str(tmp_path), device="cpu")


def test_timm_checkpoint_matches_transformers_running_timms_swin(
    omdet_turbo_timm_dir, timm_reference, scene
):
    """The released layout (timm's Swin weights, the backbone named in config.json) loads
    without timm and answers as transformers' OmDet-Turbo does with timm's Swin."""
    grounder = sceneloc.load(str(omdet_turbo_timm_dir), device="cpu", dtype=torch.float64)
    results = grounder.locate(scene, QUERIES, threshold=0.0, top_k=100)
    for result in results:
        expected = timm_reference(scene, result.query, 0.0)
        assert expected
        assert_same(result.candidates, expected)
    # And at the default threshold.
    (result,) = grounder.locate(scene, "blue", top_k=100)
    assert_same(result.candidates, timm_reference(scene, "blue", 0.3))


def test_timm_checkpoint_is_served_by_transformers_swin(omdet_turbo_timm_dir):
    model = sceneloc.load(str(omdet_turbo_timm_dir), device="cpu").backend.model
    assert type(model.vision_backbone.vision_backbone) is SwinBackbone
    assert model.config.backbone_config.model_type == "swin"
    # SwinBackbone normalises its feature maps itself, with OmDet-Turbo's norms' weights.
    assert not model.config.apply_layernorm_after_vision_backbone


def test_timm_backbone_named_by_backbone_config(tmp_path, omdet_turbo_timm_dir, scene):
    """The way transformers writes a timm backbone today (a ``backbone_config`` of type
    ``timm_backbone``) loads as the released checkpoint's way does."""
    other = shutil.copytree(omdet_turbo_timm_dir, tmp_path / "backbone-config")
    config = json.loads((other / "config.json").read_text())
    timm_keys = ("backbone", "backbone_kwargs", "use_timm_backbone")
    config = {k: v for k, v in config.items() if k not in timm_keys}
    config["backbone_config"] = json.loads(OmDetTurboConfig().to_json_string())["backbone_config"]
    assert config["backbone_config"]["model_type"] == "timm_backbone"
    (other / "config.json").write_text(json.dumps(config))
    (got,) = sceneloc.load(str(other), device="cpu").locate(scene, "blue", threshold=0.0)
    (want,) = sceneloc.load(str(omdet_turbo_timm_dir), device="cpu").locate(
        scene, "blue", threshold=0.0
    )
    assert got.candidates
    assert_same(got.candidates, want.candidates)


def test_timm_checkpoint_errors(tmp_path, omdet_turbo_timm_dir):
    """A timm backbone other than Swin is a one-line error; missing weights are missing."""
    other = shutil.copytree(omdet_turbo_timm_dir, tmp_path / "resnet")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config | {"backbone": "resnet50"}))
    with pytest.raises(sceneloc.UnsupportedModelError, match="resnet50") as error:
        sceneloc.load(str(other), device="cpu")
    assert "\n" not in str(error.value)
    (other / "model.safetensors").unlink()
    (other / "config.json").write_text((omdet_turbo_timm_dir / "config.json").read_text())
    with pytest.raises(sceneloc.ModelNotFoundError, match="cannot load"):
        sceneloc.load(str(other), device="cpu")
