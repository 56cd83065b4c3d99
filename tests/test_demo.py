"""``sceneloc demo``: offline, no arguments, the bundled model on a dense synthetic scene."""

from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

from sceneloc.cli import app
from sceneloc.demo import demo_scene

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


def test_demo_writes_the_scene_annotations_crops_and_json(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "scene.json").read_text())
    scene = demo_scene()
    assert [r["query"] for r in payload["results"]] == scene.queries
    assert payload["model"] == "native-synth"
    assert (payload["image"]["width"], payload["image"]["height"]) == scene.image.size
    with Image.open(tmp_path / "scene.annotated.png") as annotated:
        assert annotated.size == scene.image.size
    crops = sorted(tmp_path.glob("scene.crop*.png"))
    assert len(crops) == sum(r["box"] is not None for r in payload["results"])
    for query in scene.queries:  # the table may wrap a query over lines
        assert all(word in result.output for word in query.split())
