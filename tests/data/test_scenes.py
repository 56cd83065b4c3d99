"""The one reader of ``scenes.jsonl``: every object's box and attributes, found by id or path."""

from __future__ import annotations

import json

import pytest

from sceneloc.data import read_scenes, scenes_beside
from sceneloc.data.synth import generate
from sceneloc.errors import DataFormatError


def write_lines(path, records) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def test_synthetic_scenes_are_read_with_every_object(tmp_path):
    generate(tmp_path, num_images=2, seed=0, size=160, min_objects=4, max_objects=8,
             splits="train=1")  # fmt: skip
    scenes = read_scenes(tmp_path / "scenes.jsonl")
    for line in (tmp_path / "scenes.jsonl").read_text().splitlines():
        written = json.loads(line)
        by_id = scenes.find(written["image_id"], tmp_path / "nowhere.png")
        by_path = scenes.find(None, tmp_path / written["image"])
        assert by_id is by_path is not None
        assert (by_id.width, by_id.height) == (written["width"], written["height"])
        assert [o.box for o in by_id.objects] == [o["box"] for o in written["objects"]]
        assert [o.id for o in by_id.objects] == [o["id"] for o in written["objects"]]
        for read, obj in zip(by_id.objects, written["objects"]):
            assert read.attributes == {k: obj[k] for k in ("shape", "color", "size")}
        assert by_id.groups == tuple(tuple(g["members"]) for g in written["groups"])
    assert list(scenes.attributes()) == ["color", "shape", "size"]
    assert scenes_beside(tmp_path / "annotations.jsonl") is not None
    assert scenes_beside(tmp_path / "images" / "000000.png") is None


def test_a_scene_file_of_another_origin_is_read_the_same_way(tmp_path):
    write_lines(tmp_path / "scenes.jsonl", [
        {"image": str(tmp_path / "photo.jpg"), "width": 640, "height": 480,
         "objects": [{"box": [0, 0, 10, 20], "category": "dog", "score": 0.9},
                     {"box": [5, 5, 50, 60], "category": "person"}]},
    ])  # fmt: skip
    scenes = read_scenes(tmp_path / "scenes.jsonl")
    scene = scenes.find(None, tmp_path / "photo.jpg")
    assert scene is not None and scene.image_id is None
    assert scene.boxes.tolist() == [[0, 0, 10, 20], [5, 5, 50, 60]]
    assert [o.attributes for o in scene.objects] == [{"category": "dog"}, {"category": "person"}]
    assert scenes.attributes() == {"category": ["dog", "person"]}


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"image": "a.png", "width": 10, "height": 10}, "missing field 'objects'"),
        ({"image": "a.png", "width": 0, "height": 10, "objects": []}, "positive integers"),
        ({"image": "a.png", "width": 9, "height": 9, "objects": [{"id": 1}]}, "with a 'box'"),
        (
            {
                "image": "a.png",
                "width": 9,
                "height": 9,
                "objects": [],
                "groups": [{"members": "1"}],
            },
            "group 0 must have 'members'",
        ),
    ],
)
def test_a_malformed_line_names_the_file_and_line(tmp_path, record, problem):
    write_lines(tmp_path / "scenes.jsonl", [{"image": "b.png", "width": 5, "height": 5,
                                             "objects": []}, record])  # fmt: skip
    with pytest.raises(DataFormatError, match=rf"scenes.jsonl:2: .*{problem}"):
        read_scenes(tmp_path / "scenes.jsonl")


def test_a_missing_scene_file_is_a_data_format_error(tmp_path):
    with pytest.raises(DataFormatError, match="scenes file not found"):
        read_scenes(tmp_path / "scenes.jsonl")
