"""A served model is transformers' own: same parameter names, and what it saves loads back.

Fine-tuning saves the very model a backend serves, so after answering queries that model
must still be exactly what plain transformers builds from the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForObjectDetection,
    AutoModelForZeroShotObjectDetection,
    AutoProcessor,
    AutoTokenizer,
    PreTrainedModel,
)

import sceneloc
from checkpoints.omdet_turbo import processor as omdet_processor
from checkpoints.qwen_vl import plain_processor, prompt_inputs
from sceneloc.backends.base import Backend
from sceneloc.backends.qwen_vl import GROUNDING_PROMPT
from sceneloc.backends.sam3 import load_image_processor

QUERIES = ["the red square", "a green circle left of the blue triangle"]


@dataclass(frozen=True)
class Case:
    """One model a backend serves, and how plain transformers loads and runs it."""

    checkpoint: str  # the fixture saving the model's checkpoint
    served: Callable[[Backend], PreTrainedModel]
    auto: type
    inputs: Callable[[Path, Image.Image], dict]


def serving_backend(request: pytest.FixtureRequest, case: Case) -> Backend:
    """The backend serving ``case``'s model; clip-rerank's over the tiny CLIP and RT-DETR."""
    if case.checkpoint in ("clip_dir", "detector_dir"):
        clip, detector = (
            request.getfixturevalue("clip_dir"),
            request.getfixturevalue("detector_dir"),
        )
        return sceneloc.load(str(clip), device="cpu", detector=str(detector)).backend
    return sceneloc.load(str(request.getfixturevalue(case.checkpoint)), device="cpu").backend


def prompted(text: str | list[str]) -> Callable[[Path, Image.Image], dict]:
    """Inputs made by the checkpoint's own processor from the image and ``text``."""

    def inputs(checkpoint: Path, image: Image.Image) -> dict:
        processor = AutoProcessor.from_pretrained(checkpoint)
        return dict(processor(images=image, text=text, return_tensors="pt"))

    return inputs


def florence_inputs(checkpoint: Path, image: Image.Image) -> dict:
    processor = AutoProcessor.from_pretrained(checkpoint)
    inputs = processor(
        images=image, text="<CAPTION_TO_PHRASE_GROUNDING>the red square", return_tensors="pt"
    )
    return {**inputs, "decoder_input_ids": torch.tensor([[2, 0]])}


def detector_inputs(checkpoint: Path, image: Image.Image) -> dict:
    return dict(AutoImageProcessor.from_pretrained(checkpoint)(images=image, return_tensors="pt"))


def sam3_inputs(checkpoint: Path, image: Image.Image) -> dict:
    """Pixels from sceneloc's image processor (transformers' needs torchvision) and the text
    as ``Sam3Processor`` tokenizes it."""
    pixels = load_image_processor(str(checkpoint))(images=image, return_tensors="pt")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    text = tokenizer(["the red square"], padding="max_length", max_length=32, return_tensors="pt")
    return {"pixel_values": pixels["pixel_values"], **text}


def qwen_vl_inputs(checkpoint: Path, image: Image.Image) -> dict:
    """The grounding prompt through transformers' own processor (PIL images, no video)."""
    prompt = GROUNDING_PROMPT.format(query="the red square")
    return prompt_inputs(plain_processor(checkpoint), image, prompt)


def omdet_turbo_inputs(checkpoint: Path, image: Image.Image) -> dict:
    processor = omdet_processor(checkpoint)
    return dict(processor(images=image, text=["the red square"], return_tensors="pt"))


CASES = {
    "grounding-dino": Case(
        "grounding_dino_dir", lambda b: b.model, AutoModelForZeroShotObjectDetection,
        prompted("the red square."),
    ),
    "mm-grounding-dino": Case(
        "mm_grounding_dino_dir", lambda b: b.model, AutoModelForZeroShotObjectDetection,
        prompted("the red square."),
    ),
    "owlv2": Case(
        "owlv2_dir", lambda b: b.model, AutoModelForZeroShotObjectDetection,
        prompted(["the red square"]),
    ),
    "florence-2": Case(
        "florence2_dir", lambda b: b.model, AutoModelForImageTextToText, florence_inputs
    ),
    "clip-rerank CLIP": Case("clip_dir", lambda b: b.clip, AutoModel, prompted(["a red square"])),
    "clip-rerank detector": Case(
        "detector_dir", lambda b: b.detector, AutoModelForObjectDetection, detector_inputs
    ),
    "sam3": Case("sam3_dir", lambda b: b.model, AutoModel, sam3_inputs),
    "sam3-lite": Case("sam3_lite_dir", lambda b: b.model, AutoModel, sam3_inputs),
    "qwen3-vl": Case(
        "qwen3_vl_dir", lambda b: b.model, AutoModelForImageTextToText, qwen_vl_inputs
    ),
    "qwen2.5-vl": Case(
        "qwen2_5_vl_dir", lambda b: b.model, AutoModelForImageTextToText, qwen_vl_inputs
    ),
    "kosmos-2": Case(
        "kosmos2_dir", lambda b: b.model, AutoModelForImageTextToText,
        prompted("<grounding><phrase> the red square</phrase>"),
    ),
    "omdet-turbo": Case(
        "omdet_turbo_dir", lambda b: b.model, AutoModelForZeroShotObjectDetection,
        omdet_turbo_inputs,
    ),
}  # fmt: skip


def assert_same_outputs(got, want) -> None:
    tensors = [key for key, value in want.items() if isinstance(value, torch.Tensor)]
    assert tensors
    for key in tensors:
        assert torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("name", CASES)
def test_served_model_is_plain_transformers_and_saves_what_it_loads(name, request, scene, tmp_path):
    case = CASES[name]
    backend = serving_backend(request, case)
    checkpoint = request.getfixturevalue(case.checkpoint)
    sceneloc.api.Grounder(backend, name).locate(scene, QUERIES, threshold=0.0)
    served = case.served(backend)
    plain = case.auto.from_pretrained(checkpoint).eval()
    assert list(served.state_dict()) == list(plain.state_dict())

    served.save_pretrained(tmp_path)
    reloaded, info = case.auto.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    inputs = case.inputs(checkpoint, scene)
    with torch.no_grad():
        want = plain(**inputs)
        assert_same_outputs(served(**inputs), want)
        assert_same_outputs(reloaded.eval()(**inputs), want)
