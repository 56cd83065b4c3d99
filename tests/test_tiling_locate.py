"""``locate(..., tiles=)`` as users meet it: small things found in a huge scene, small images
answered as untiled, tiles batched and calibrated, unsafe families and bad values refused
from the API and the CLI (the HTTP API: ``server/test_tiling_http.py``)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import sceneloc
from checkpoints.native import build_native
from conftest import draw_scene
from sceneloc.boxes import iou_matrix
from sceneloc.calibration import CalibratedBackend, Calibration
from sceneloc.cli import app
from sceneloc.data import read_samples
from sceneloc.data.synth import generate, make_domain
from sceneloc.demo import demo_scene
from sceneloc.errors import InvalidOptionError
from sceneloc.tiling import tile_windows

runner = CliRunner()


@pytest.fixture(scope="module")
def bundled() -> sceneloc.Grounder:
    return sceneloc.load("native-synth", device="cpu")


@pytest.fixture(scope="module")
def huge_scene(tmp_path_factory):
    """A 2048 px synthetic scene of objects sized as in the 512 px scenes of training."""
    out = tmp_path_factory.mktemp("huge")
    generate(out, 1, 31, size=2048, min_objects=100, max_objects=150, queries_per_image=8,
             domain=make_domain(object_size_base=512))  # fmt: skip
    return out, list(read_samples(out / "annotations.jsonl"))


@pytest.fixture(scope="module")
def tiny_native(tmp_path_factory):
    directory = build_native(tmp_path_factory.mktemp("native"), ["a red circle", "the square"])
    return sceneloc.load(str(directory), device="cpu")


@pytest.fixture(scope="module")
def florence(florence2_dir) -> sceneloc.Grounder:
    return sceneloc.load(str(florence2_dir), device="cpu")


def hits(answer, samples) -> list[bool]:
    return [
        bool(len(result.candidates))
        and iou_matrix(result.candidates.boxes[:1], [sample.box])[0, 0] >= 0.5
        for result, sample in zip(answer.results, samples)
    ]


def test_tiles_find_small_things_the_whole_image_misses(bundled, huge_scene):
    root, samples = huge_scene
    chosen = [s for s in samples if s.type in ("attribute", "relation")]
    assert chosen
    image = root / chosen[0].image
    queries = [s.query for s in chosen]
    untiled = bundled.locate(image, queries, threshold=0.0)
    tiled = bundled.locate(image, queries, threshold=0.0, tiles="auto")
    assert sum(hits(tiled, chosen)) > sum(hits(untiled, chosen))
    assert sum(hits(tiled, chosen)) >= len(chosen) / 2
    width, height = tiled.image.size
    for result in tiled.results:  # boxes in the whole image's pixels
        x1, y1, x2, y2 = result.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


@pytest.mark.parametrize("tiles", ["auto", 512, "600"])
def test_a_tiled_call_on_a_small_image_equals_the_untiled_one(bundled, tiles):
    image = demo_scene().image
    assert max(image.size) <= 512
    queries = ["the red circle", "the blue square left of the green star"]
    untiled = bundled.locate(image, queries, threshold=0.0)
    tiled = bundled.locate(image, queries, threshold=0.0, tiles=tiles)
    assert [r.to_dict() for r in tiled.results] == [r.to_dict() for r in untiled.results]


def test_tiles_go_through_the_native_model_in_batches(tiny_native):
    backend = tiny_native.backend
    image = Image.effect_noise((300, 200), 60).convert("RGB")
    tiles = [image.crop(tuple(w)) for w in tile_windows(300, 200, 96, 0.2).tolist()]
    queries = ["a red circle", "the square"]
    one_by_one = [backend.predict(tile, queries, 0.0) for tile in tiles]
    backend.tile_batch_size = 4
    batched = backend.predict_tiles(tiles, queries, 0.0)
    assert len(batched) == len(tiles) > backend.tile_batch_size
    for ours, alone in zip(batched, one_by_one):
        for found, expected in zip(ours, alone):
            assert found.boxes == pytest.approx(expected.boxes, abs=1e-4)
            assert found.scores == pytest.approx(expected.scores, abs=1e-5)


def test_tiles_are_scored_by_the_tile_presence_calibration(tiny_native):
    backend = tiny_native.backend
    image = Image.effect_noise((96, 96), 60).convert("RGB")
    queries = ["a red circle", "the square"]
    weights = [0.3, 1.5, -0.7]
    backend.config.tile_presence_calibration = weights
    try:
        (found,) = backend.predict_tiles([image], queries, 0.0)
        whole = backend.predict(image, queries, 0.0)
    finally:
        backend.config.tile_presence_calibration = None
    features = backend.model.presence_features(backend.forward(image, queries))
    expected = torch.sigmoid(features @ torch.tensor(weights)).tolist()
    assert [f.scores[0] for f in found] == pytest.approx(expected, abs=1e-5)
    assert [w.scores[0] for w in whole] != pytest.approx(expected, abs=1e-3)


def test_a_calibrated_model_calibrates_its_tiles_too(tiny_native):
    calibration = Calibration("platt", {"slope": 3.0, "intercept": -2.0}, "tiny", "native", "", "")
    calibrated = CalibratedBackend(tiny_native.backend, calibration)
    image = Image.effect_noise((200, 200), 60).convert("RGB")
    tiles = [image.crop(tuple(w)) for w in tile_windows(200, 200, 96, 0.2).tolist()]
    raw = tiny_native.backend.predict_tiles(tiles, ["the square"], 0.0)
    for (found,), (expected,) in zip(calibrated.predict_tiles(tiles, ["the square"], 0.0), raw):
        assert found.scores == pytest.approx(calibration.probability(expected.scores))
        assert found.boxes.tolist() == expected.boxes.tolist()


def test_a_family_not_safe_to_tile_is_looked_at_whole(florence):
    image = Image.effect_noise((1200, 900), 60).convert("RGB")
    with pytest.raises(InvalidOptionError, match="not safe to tile"):
        florence.locate(image, "a cat", tiles=512)
    auto = florence.locate(image, "a cat", tiles="auto")
    off = florence.locate(image, "a cat")
    assert [r.to_dict() for r in auto.results] == [r.to_dict() for r in off.results]


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "scene.png"
    demo_scene().image.save(path)
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tiles", "0"], "tile size must be a positive"),
        (["--tiles", "huge"], "tiles must be auto, off or a tile size"),
        (["--tile-overlap", "-0.1"], "tile overlap must be"),
        (["--tile-overlap", "1"], "tile overlap must be"),
        (["--tiles", "512", "--model", "FLORENCE"], "not safe to tile"),
    ],
)
def test_cli_bad_tiling_exits_2_with_one_line(args, message, image_path, florence2_dir):
    args = [str(florence2_dir) if a == "FLORENCE" else a for a in args]
    result = runner.invoke(app, ["locate", str(image_path), "-q", "a circle", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_batch_and_evaluate_take_tiles(image_path, huge_scene, tmp_path):
    root, _ = huge_scene
    out = tmp_path / "out.jsonl"
    common = ["--model", "native-synth", "--device", "cpu"]
    folder = ["--images", str(image_path.parent)]
    result = runner.invoke(
        app, ["batch", *common, *folder, "--out", str(out), "-q", "a red circle", "--tiles", "auto"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text().splitlines()[0])["query"] == "a red circle"
    bad_out = str(tmp_path / "bad.jsonl")
    bad = runner.invoke(
        app, ["batch", *common, *folder, "--out", bad_out, "-q", "x", "--tiles", "0"]
    )
    assert bad.exit_code == 2 and "tile size must be a positive" in bad.stderr
    data = str(root / "annotations.jsonl")
    result = runner.invoke(
        app, ["evaluate", "--data", data, *common, "--limit", "2", "--tiles", "512"]
    )
    assert result.exit_code == 0, result.output
    bad = runner.invoke(app, ["evaluate", "--data", data, *common, "--tile-overlap", "-1"])
    assert bad.exit_code == 2 and "tile overlap must be" in bad.stderr


@pytest.mark.parametrize("family", ["grounding_dino_dir", "owlv2_dir"])
def test_pretrained_families_tile_large_images(family, request):
    """Tiny random-weight models: what they find means nothing, but it is ranked and inside."""
    grounder = sceneloc.load(str(request.getfixturevalue(family)), device="cpu")
    image = draw_scene().resize((900, 540))
    tiled = grounder.locate(image, ["a red square", "a circle"], threshold=0.0, tiles=300)
    assert len(tiled.results) == 2
    for result in tiled.results:
        for x1, y1, x2, y2 in result.candidates.boxes.tolist():
            assert 0 <= x1 < x2 <= 900 and 0 <= y1 < y2 <= 540
        assert list(result.candidates.scores) == sorted(result.candidates.scores, reverse=True)
