"""``sceneloc describe`` as a user meets it: table, JSON, --out, dense mode and bad boxes.

The model is a tiny random Florence-2 built on disk; every expected answer is the Python
API's for the same image, boxes and settings.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

import sceneloc
from sceneloc.cli import app
from sceneloc.results import slug

runner = CliRunner()
BOXES = ["10,10,50,60", "60,15,200,80"]  # the second reaches past the 160x96 scene


@pytest.fixture(scope="module")
def image_path(scene, tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "scene.png"
    scene.save(path)
    return path


@pytest.fixture(scope="module")
def describer(florence2_dir) -> sceneloc.Describer:
    return sceneloc.load(str(florence2_dir), task="describe", device="cpu")


def describe(image, *args: str, boxes=BOXES):
    return runner.invoke(app, ["describe", str(image), *(f"--box={b}" for b in boxes), *args])


def test_table_shows_each_region_its_caption_and_score(image_path, florence2_dir, describer):
    # Short captions, so the table never wraps them.
    result = describe(image_path, "--model", str(florence2_dir), "--max-new-tokens", "4")
    assert result.exit_code == 0, result.output
    answer = describer.describe(image_path, BOXES, max_new_tokens=4)
    assert "(160x96)" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == len(BOXES)
    for row, region in zip(rows, answer, strict=True):
        assert ", ".join(f"{v:.1f}" for v in region.box) in row
        assert region.caption in row
        assert f"{region.score:.3f}" in row


def test_json_is_exactly_the_documented_object(image_path, florence2_dir, describer):
    result = describe(image_path, "--model", str(florence2_dir), "--json", "--beams", "2")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # stdout holds the JSON object and nothing else
    assert payload == describer.describe(image_path, BOXES, num_beams=2).to_dict()
    assert set(payload) == {"image", "model", "regions"}
    assert payload["image"] == {"path": str(image_path), "width": 160, "height": 96}
    assert payload["model"] == str(florence2_dir)
    for region in payload["regions"]:
        assert set(region) == {"box", "caption", "score"}
        assert isinstance(region["caption"], str) and region["caption"]
        assert region["score"] is None or isinstance(region["score"], float)
    # The box reaching past the image comes back clipped to it.
    assert [r["box"] for r in payload["regions"]] == [[10, 10, 50, 60], [60, 15, 160, 80]]


def test_without_boxes_the_model_finds_the_regions(image_path, florence2_dir, describer):
    result = describe(image_path, "--model", str(florence2_dir), "--json", boxes=[])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload == describer.describe(image_path).to_dict()
    assert payload["regions"], "the tiny model's dense captions find something"
    for x1, y1, x2, y2 in (region["box"] for region in payload["regions"]):
        assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 96


def test_out_writes_the_annotated_image_and_one_crop_per_region(
    image_path, florence2_dir, describer, tmp_path
):
    out = tmp_path / "out"
    result = describe(image_path, "--model", str(florence2_dir), "--out", str(out))
    assert result.exit_code == 0, result.output
    captions = describer.describe(image_path, BOXES).captions
    crops = [f"scene.region{i:02d}.{slug(c)}.png" for i, c in enumerate(captions, start=1)]
    assert sorted(p.name for p in out.iterdir()) == sorted(["scene.annotated.png", *crops])
    assert Image.open(out / "scene.annotated.png").size == (160, 96)
    assert [Image.open(out / name).size for name in crops] == [(40, 50), (100, 65)]


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ("a,b,c,d", "box 'a,b,c,d' is not four numbers x1,y1,x2,y2"),
        ("10,10,50", "box '10,10,50' has 3 values, not four"),
        ("10,10,50,60,70", "has 5 values, not four"),
        ("NaN,10,50,60", "box 1 (nan, 10, 50, 60) is not four finite numbers"),
        ("10,10,inf,60", "is not four finite numbers"),
        ("50,10,10,60", "box 1 (50, 10, 10, 60) is empty: need x2 > x1 and y2 > y1"),
        ("10,60,50,60", "is empty: need x2 > x1 and y2 > y1"),
        ("200,10,300,60", "box 1 (200, 10, 300, 60) lies wholly outside the 160x96 image"),
        ("-50,-40,-10,-1", "lies wholly outside the 160x96 image"),
    ],
)
def test_bad_boxes_exit_2_with_one_line_before_loading_a_model(image_path, box, message):
    # florence-2-large is not on this machine: the box is refused before it is looked for.
    result = describe(image_path, "--model", "florence-2-large", boxes=[BOXES[0], box])
    assert result.exit_code == 2
    assert message.replace("box 1", "box 2") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "grounding-dino-base"], "does locate but not describe"),
        (["--model", "florence-2-base", "--beams", "0"], "Invalid value for '--beams'"),
    ],
)
def test_bad_arguments_exit_2(image_path, args, message):
    result = describe(image_path, *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_missing_image_exits_2_with_one_line(tmp_path):
    result = describe(tmp_path / "nowhere.png", "--model", "florence-2-base")
    assert result.exit_code == 2
    assert "nowhere.png" in result.stderr and len(result.stderr.strip().splitlines()) == 1
