"""Samples with several target boxes or none, and the gRefCOCO converter that writes them."""

import json

import pytest

from sceneloc.data import Sample, convert_grefcoco, read_samples, write_samples
from sceneloc.errors import DataFormatError


def test_no_target_and_several_targets_round_trip(tmp_path):
    samples = [
        Sample("none", "a.png", "the purple cat", None, "val", boxes=[]),
        Sample("two", "a.png", "all the red stars", [0, 0, 4, 4], "val",
               boxes=[[0, 0, 4, 4], [5, 5, 9, 9]]),
    ]  # fmt: skip
    path = tmp_path / "s.jsonl"
    write_samples(path, samples)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["box"] is None and lines[0]["boxes"] == []
    back = list(read_samples(path))
    assert back == samples
    assert back[0].targets == [] and not back[0].has_target
    assert back[1].targets == [[0, 0, 4, 4], [5, 5, 9, 9]]


def test_old_files_and_null_box_without_boxes(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"id": 1, "image": "a.png", "query": "q", "box": [1, 2, 3, 4], "split": "t"}\n'
        '{"id": 2, "image": "a.png", "query": "q", "box": null, "split": "t"}\n'
    )
    old, empty = read_samples(path)
    assert old.targets == [[1, 2, 3, 4]] and old.has_target
    assert empty.targets == [] and empty.box is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [('"box": null, "boxes": [[0, 0, 1, 1]]', "'box' is null"),
     ('"box": [0, 0, 1, 1], "boxes": []', "'boxes' is empty")],
)  # fmt: skip
def test_box_and_boxes_must_agree(tmp_path, fields, problem):
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": 1, "image": "a.png", "query": "q", "split": "t", ' + fields + "}\n")
    with pytest.raises(DataFormatError, match=problem):
        list(read_samples(path))


GREFS = [
    {"ref_id": 1, "image_id": 10, "split": "val", "ann_id": [100, 101], "no_target": False,
     "category_id": 1, "sentences": [{"sent_id": 5, "sent": "two dogs on the left"},
                                     {"sent_id": 6, "raw": "Both dogs."}]},
    {"ref_id": 2, "image_id": 10, "split": "val", "ann_id": [-1], "no_target": True,
     "category_id": 1, "sentences": [{"sent_id": 7, "sent": "the cat on the sofa"}]},
    {"ref_id": 3, "image_id": 11, "split": "testA", "ann_id": [102], "no_target": False,
     "category_id": 2, "sentences": [{"sent_id": 8, "sent": "the red bus"}]},
]  # fmt: skip
INSTANCES = {
    "images": [{"id": 10, "file_name": "ten.jpg"}, {"id": 11}],
    "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "bus"}],
    "annotations": [
        {"id": 100, "image_id": 10, "category_id": 1, "bbox": [0, 0, 10, 20]},
        {"id": 101, "image_id": 10, "category_id": 1, "bbox": [30, 0, 10, 10]},
        {"id": 102, "image_id": 11, "category_id": 2, "bbox": [5, 5, 5, 5]},
    ],
}


def write_grefcoco(root, refs=GREFS):
    root.mkdir(parents=True, exist_ok=True)
    (root / "grefs(unc).json").write_text(json.dumps(refs))
    (root / "instances.json").write_text(json.dumps(INSTANCES))
    (root / "images").mkdir(exist_ok=True)


def test_grefcoco_keeps_every_target_and_the_no_target_refs(tmp_path):
    root = tmp_path / "grefcoco"
    write_grefcoco(root)
    samples = list(convert_grefcoco(root, root / "images", "val", relative_to=root))
    assert [(s.id, s.query) for s in samples] == [
        ("1-5", "two dogs on the left"), ("1-6", "Both dogs."), ("2-7", "the cat on the sofa")
    ]  # fmt: skip
    two = samples[0]
    assert two.targets == [[0, 0, 10, 20], [30, 0, 40, 10]] and two.box == [0, 0, 10, 20]
    assert two.image == "images/ten.jpg" and two.category == "dog" and two.image_id == 10
    none = samples[2]
    assert none.targets == [] and none.box is None and none.category is None
    (bus,) = convert_grefcoco(root, root / "images", "testA", relative_to=root)
    assert bus.image == "images/COCO_train2014_000000000011.jpg" and bus.targets == [[5, 5, 10, 10]]


def test_grefcoco_malformed_refs_and_unknown_split(tmp_path):
    root = tmp_path / "grefcoco"
    write_grefcoco(root, [{**GREFS[0], "ann_id": [999]}, {**GREFS[1], "no_target": False}])
    with pytest.raises(DataFormatError, match=r"ref 0 \(ref_id 1\): ann_id 999 is not in"):
        list(convert_grefcoco(root, root / "images", "val"))
    kept = list(convert_grefcoco(root, root / "images", "val", skip_bad=True))
    assert kept == []
    with pytest.raises(DataFormatError, match=r"no refs in split 'testB' \(it has: val\)"):
        list(convert_grefcoco(root, root / "images", "testB"))


def test_prepare_grefcoco_command(tmp_path):
    from typer.testing import CliRunner

    from sceneloc.cli import app

    root = tmp_path / "grefcoco"
    write_grefcoco(root)
    out = tmp_path / "out" / "val.jsonl"
    args = ["data", "prepare", "grefcoco", "--root", root, "--images", root / "images"]
    result = CliRunner().invoke(app, [*map(str, args), "--split", "val", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 samples" in result.output
    assert [s.targets for s in read_samples(out)][2] == []
    bad = CliRunner().invoke(app, [*map(str, args), "--split", "testB", "--out", str(out)])
    assert bad.exit_code == 2 and "no refs in split 'testB'" in bad.output
