"""The native backend: a saved tiny model loaded by directory, boxes mapped to the image."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer
from typer.testing import CliRunner

import sceneloc
from sceneloc.backends.native import NativeBackend
from sceneloc.cli import app
from sceneloc.native import NativeConfig, NativeGroundingModel
from sceneloc.native.text import vocabulary_from_texts, word_tokenizer

QUERIES = ["the red square", "the green circle left of the blue triangle", "a purple star"]
IMAGE_SIZE = 64
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module", params=["cross-attention", "concat"])
def native_dir(request, tmp_path_factory):
    """A tiny untrained native model and its word tokenizer, saved like ``sceneloc train``."""
    tokenizer = word_tokenizer(vocabulary_from_texts(QUERIES[:2]), max_length=16)
    config = NativeConfig(
        fusion=request.param, image_size=IMAGE_SIZE, hidden_size=16, fusion_layers=1,
        image_layers=1, text_layers=1, attention_heads=2, cnn_channels=[8, 16, 16, 16],
        vocab_size=len(tokenizer), max_text_length=16, image_mean=MEAN, image_std=STD,
    )  # fmt: skip
    torch.manual_seed(0)
    model = NativeGroundingModel(config).eval()
    out = tmp_path_factory.mktemp(f"native-{request.param}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def grounder(native_dir):
    return sceneloc.load(str(native_dir), device="cpu")


def model_outputs(native_dir, image: Image.Image, queries: list[str]) -> list[tuple[list, float]]:
    """The saved model's own normalised box and presence logit for each query asked alone,
    with its inputs made by hand."""
    model = NativeGroundingModel.from_pretrained(native_dir).eval()
    tokenizer = word_tokenizer(vocabulary_from_texts(QUERIES[:2]), max_length=16)
    small = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    pixels = np.asarray(small, dtype=np.float32) / 255.0
    pixels = (pixels - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    pixel_values = torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None]
    outputs = []
    for query in queries:
        ids = torch.tensor([tokenizer(query)["input_ids"]])
        with torch.no_grad():
            out = model(pixel_values, input_ids=ids, attention_mask=torch.ones_like(ids))
        outputs.append((out.boxes[0].tolist(), out.presence_logits[0].item()))
    return outputs


def expected_box(box: list[float], width: int, height: int) -> list[float]:
    cx, cy, w, h = box
    x1, y1 = (cx - w / 2) * width, (cy - h / 2) * height
    x2, y2 = (cx + w / 2) * width, (cy + h / 2) * height
    return [min(max(x1, 0), width), min(max(y1, 0), height),
            min(max(x2, 0), width), min(max(y2, 0), height)]  # fmt: skip


def test_loads_as_the_native_backend(grounder):
    assert grounder.backend.family.name == "native"
    assert grounder.device == torch.device("cpu")
    assert grounder.dtype == torch.float32


def test_one_box_per_query_in_pixels_of_the_original_image(native_dir, grounder, scene):
    width, height = scene.size
    assert (width, height) == (160, 96)
    results = grounder.locate(scene, QUERIES, threshold=0.0)
    assert [r.query for r in results] == QUERIES
    for result, (box, logit) in zip(results, model_outputs(native_dir, scene, QUERIES)):
        assert len(result.candidates) == 1
        assert result.found
        assert result.box == pytest.approx(expected_box(box, width, height), abs=1e-3)
        assert result.score == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-5)
        x1, y1, x2, y2 = result.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_query_alone_equals_query_among_others(grounder, scene):
    together = grounder.locate(scene, QUERIES, threshold=0.0)
    for result in together:
        (alone,) = grounder.locate(scene, result.query, threshold=0.0)
        assert alone.box == pytest.approx(result.box, abs=1e-4)
        assert alone.score == pytest.approx(result.score, abs=1e-5)


def test_query_without_words_is_answered_as_if_alone(grounder, scene):
    accent_only = "\u0301"  # a combining accent, which the word tokenizer strips
    (alone,) = grounder.locate(scene, accent_only, threshold=0.0)
    assert alone.found
    together = grounder.locate(scene, [QUERIES[0], accent_only], threshold=0.0)
    assert together[1].box == pytest.approx(alone.box, abs=1e-4)
    assert together[1].score == pytest.approx(alone.score, abs=1e-5)


def test_threshold_above_the_score_finds_nothing(grounder, scene):
    (result,) = grounder.locate(scene, QUERIES[0], threshold=0.0)
    score = result.score
    (above,) = grounder.locate(scene, QUERIES[0], threshold=min(1.0, score + 1e-3))
    assert not above.found
    assert above.box is None and above.score is None and len(above.candidates) == 0
    (below,) = grounder.locate(scene, QUERIES[0], threshold=max(0.0, score - 1e-3))
    assert below.found and below.score == pytest.approx(score)


def test_default_threshold_is_an_even_presence(grounder, scene):
    (result,) = grounder.locate(scene, QUERIES[0], threshold=0.0)
    (default,) = grounder.locate(scene, QUERIES[0])
    assert default.found == (result.score >= 0.5)


def test_calibrated_score_combines_presence_and_best_cell(native_dir, scene, tmp_path):
    """A model whose config carries calibration weights scores with them."""
    copy = shutil.copytree(native_dir, tmp_path / "calibrated")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "presence_calibration": [0.5, 2, -1]}))
    calibrated = sceneloc.load(str(copy), device="cpu")
    outputs = calibrated.backend.forward(scene.convert("RGB"), QUERIES)
    best_cell = (
        outputs.cell_logits.max(dim=1).values
        if outputs.cell_logits is not None
        else torch.zeros(len(QUERIES))
    )
    expected = torch.sigmoid(0.5 * outputs.presence_logits + 2.0 * best_cell - 1.0)
    results = calibrated.locate(scene, QUERIES, threshold=0.0)
    assert [r.score for r in results] == pytest.approx(expected.tolist(), abs=1e-5)


def test_image_encoded_once_per_call(grounder, scene):
    batches = []
    hook = grounder.backend.model.image_encoder.register_forward_hook(
        lambda module, args, output: batches.append(args[0].shape[0])
    )
    try:
        results = grounder.locate(scene, [f"object number {i}" for i in range(6)], threshold=0)
    finally:
        hook.remove()
    assert batches == [1]
    assert len(results) == 6


def test_bundled_model_is_listed():
    models = {info.name: info for info in sceneloc.list_models()}
    assert models["native-synth"].family.name == "native"
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    assert "native-synth" in result.stdout


def test_directory_without_a_model(tmp_path, native_dir):
    with pytest.raises(sceneloc.ModelNotFoundError, match=r"config\.json"):
        sceneloc.load(str(tmp_path), device="cpu")
    # The native config.json but neither weights nor tokenizer.
    (tmp_path / "config.json").write_text((native_dir / "config.json").read_text())
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "sceneloc-native"
    with pytest.raises(sceneloc.ModelNotFoundError, match="cannot load"):
        sceneloc.load(str(tmp_path), device="cpu")


def test_directory_of_an_unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not-a-grounder"}))
    with pytest.raises(sceneloc.UnsupportedModelError, match="not-a-grounder"):
        sceneloc.load(str(tmp_path), device="cpu")


def test_model_in_memory_is_served_where_it_is(native_dir, grounder, scene):
    """Training validates the model it trains: wrapped as it is, answers as if loaded."""
    model = NativeGroundingModel.from_pretrained(native_dir).to(torch.float64)
    backend = NativeBackend(model, AutoTokenizer.from_pretrained(native_dir))
    assert (backend.device.type, backend.dtype, backend.checkpoint) == ("cpu", torch.float64, None)
    assert backend.default_threshold == 0.5
    in_memory = sceneloc.Grounder(backend, "in memory").locate(scene, QUERIES, threshold=0.0)
    for got, want in zip(in_memory, grounder.locate(scene, QUERIES, threshold=0.0)):
        assert got.box == pytest.approx(want.box, abs=1e-4)
        assert got.score == pytest.approx(want.score, abs=1e-5)
