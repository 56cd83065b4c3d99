"""``sceneloc demo``: offline, no arguments, the bundled model on a dense synthetic scene."""

from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

import sceneloc
from sceneloc.boxes import iou_matrix
from sceneloc.cli import app
from sceneloc.demo import demo_scene
from sceneloc.results import slug

runner = CliRunner()


def test_demo_scene_asks_every_kind_and_one_absent_thing():
    scene = demo_scene()
    assert len(scene.queries) == 5
    assert scene.truths[-1] is None and all(box is not None for box in scene.truths[:-1])
    group_box = scene.truths[3]
    # The group event's box spans several objects: wider or taller than any single one.
    assert max(group_box[2] - group_box[0], group_box[3] - group_box[1]) > max(
        max(b[2] - b[0], b[3] - b[1]) for b in scene.truths[:3]
    )
    assert demo_scene().queries == scene.queries  # the same scene every time


def test_demo_answers_the_scene_truth_and_writes_what_it_found(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "scene.json").read_text())
    scene = demo_scene()
    assert [r["query"] for r in payload["results"]] == scene.queries
    assert payload["model"] == "native-synth"
    assert (payload["image"]["width"], payload["image"]["height"]) == scene.image.size

    # Each thing in the scene is found where it is; the absent one is answered "not found".
    assert scene.queries[-1] == "the red square" and scene.truths[-1] is None
    for answer, truth in zip(payload["results"], scene.truths):
        if truth is None:
            assert answer["box"] is None, f"{answer['query']!r} is not in the scene"
        else:
            assert answer["box"] is not None, f"{answer['query']!r} was not found"
            assert iou_matrix([answer["box"]], [truth])[0, 0] >= 0.5, answer["query"]

    with Image.open(tmp_path / "scene.png") as drawn:
        assert drawn.size == scene.image.size
    with Image.open(tmp_path / "scene.annotated.png") as annotated:
        assert annotated.size == scene.image.size
    present = [(i, r) for i, r in enumerate(payload["results"], 1) if scene.truths[i - 1]]
    crops = sorted(p.name for p in tmp_path.glob("scene.crop*.png"))
    assert crops == [f"scene.crop{i:02d}.{slug(r['query'])}.png" for i, r in present]
    for (index, answer), name in zip(present, crops):  # each crop is its query's box
        x1, y1, x2, y2 = answer["box"]
        with Image.open(tmp_path / name) as crop:
            assert abs(crop.width - (x2 - x1)) <= 1 and abs(crop.height - (y2 - y1)) <= 1, index
    for query in scene.queries:  # the table may wrap a query over lines
        assert all(word in result.output for word in query.split())


def test_demo_describes_regions_that_the_grounder_finds_again(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    described = json.loads((tmp_path / "scene.described.json").read_text())
    scene = demo_scene()
    truths = [box for box in scene.truths if box is not None]
    assert described["model"] == "native-describer-synth"
    assert [region["box"] for region in described["regions"]] == [
        [round(v, 2) for v in box] for box in truths
    ]
    # Each description, given back to the grounder, leads to the region it describes.
    grounder = sceneloc.load("native-synth", device="cpu")
    captions = [region["caption"] for region in described["regions"]]
    for caption, truth, found in zip(captions, truths, grounder.locate(scene.image, captions)):
        assert found.box is not None and iou_matrix([found.box], [truth])[0, 0] >= 0.5, caption
        assert all(word in result.output for word in caption.split())  # the table may wrap
    crops = sorted(tmp_path.glob("scene.described.region*.png"))
    assert len(crops) == len(truths)
