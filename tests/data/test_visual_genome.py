"""Visual Genome region descriptions: a hand-made file in VG's own field names, converted.

Expected boxes are worked out here from the fixture's numbers: ``[x, y, x + width, y +
height]``, clipped to the image's ``width`` and ``height`` from image_data.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sceneloc.cli import app
from sceneloc.data import read_samples
from sceneloc.data.convert import MALFORMED, ConversionStats
from sceneloc.data.visual_genome import EMPTY, NO_PHRASE, NO_SPLIT, convert_visual_genome
from sceneloc.errors import DataFormatError
from sceneloc.evaluation import read_regions

runner = CliRunner()

IMAGE_DATA = [
    {"width": 800, "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/1.jpg",
     "height": 600, "image_id": 1, "coco_id": None, "flickr_id": None},
    {"width": 500, "url": "https://cs.stanford.edu/people/rak248/VG_100K/2.jpg",
     "height": 333, "image_id": 2, "coco_id": 139, "flickr_id": None},
]  # fmt: skip


def region(region_id, image_id, phrase, x, y, width, height):
    return {"region_id": region_id, "width": width, "height": height, "image_id": image_id,
            "phrase": phrase, "y": y, "x": x}  # fmt: skip


REGIONS = [
    {"regions": [
        region(11, 1, "the clock is green in colour", 421, 57, 82, 139),
        region(12, 1, "shade is along the street ", 194, 372, 376, 105),
        region(13, 1, "man is wearing sneakers", 241, 491, 64, 48),
        region(14, 1, "the clock is green", 421, 57, 82, 139),  # the same region again
        region(15, 1, "a sign reaching past the edge", 700, 550, 150, 80),  # clipped
    ], "id": 1},
    {"regions": [
        region(21, 2, "white plate with food", 10, 20, 200, 100),
        region(22, 2, "   ", 0, 0, 10, 10),  # no phrase
        region(23, 2, "nothing to see", 600, 10, 30, 30),  # wholly outside the 500 px image
        region(24, 2, "a line", 5, 5, 0, 40),  # empty
    ], "id": 2},
]  # fmt: skip


@pytest.fixture
def visual_genome(tmp_path) -> tuple[Path, Path, Path]:
    images = tmp_path / "vg" / "images"
    for folder, name in (("VG_100K_2", "1.jpg"), ("VG_100K", "2.jpg")):
        (images / folder).mkdir(parents=True, exist_ok=True)
        (images / folder / name).write_bytes(b"")
    regions = tmp_path / "vg" / "region_descriptions.json"
    regions.write_text(json.dumps(REGIONS))
    image_data = tmp_path / "vg" / "image_data.json"
    image_data.write_text(json.dumps(IMAGE_DATA))
    return regions, image_data, images


def test_one_sample_per_region_description(visual_genome, tmp_path):
    regions, image_data, images = visual_genome
    stats = ConversionStats()
    samples = list(convert_visual_genome(regions, image_data, images, relative_to=tmp_path / "vg",
                                         stats=stats))  # fmt: skip
    assert [s.id for s in samples] == ["11", "12", "13", "14", "15", "21"]
    assert [s.query for s in samples][:2] == ["the clock is green in colour",
                                              "shade is along the street"]  # fmt: skip
    assert samples[0].box == [421, 57, 421 + 82, 57 + 139]
    assert samples[2].box == [241, 491, 241 + 64, 491 + 48]
    assert samples[4].box == [700, 550, 800, 600]  # 700 + 150 and 550 + 80 clipped to 800 x 600
    assert (
        samples[0].image == "images/VG_100K_2/1.jpg" and samples[-1].image == "images/VG_100K/2.jpg"
    )
    assert [s.image_id for s in samples] == [1, 1, 1, 1, 1, 2]
    assert {s.split for s in samples} == {"train"}
    assert stats.samples == 6 and stats.skipped == {NO_PHRASE: 1, EMPTY: 2}
    # descriptions of one region are its references
    found = read_regions(samples)
    assert len(found) == 5
    assert found[0].references == ("the clock is green in colour", "the clock is green")


def test_split_file_and_merged_image_folder(visual_genome, tmp_path):
    regions, image_data, images = visual_genome
    for folder, name in (("VG_100K_2", "1.jpg"), ("VG_100K", "2.jpg")):
        (images / folder / name).rename(images / name)  # both folders merged into one
    split_file = tmp_path / "densecap_splits.json"
    split_file.write_text(json.dumps({"train": [], "val": [2], "test": []}))
    stats = ConversionStats()
    samples = list(convert_visual_genome(regions, image_data, images, split_file=split_file,
                                         stats=stats))  # fmt: skip
    assert [(s.id, s.split) for s in samples] == [("21", "val")]
    assert samples[0].image == str(images / "2.jpg")
    assert stats.skipped[NO_SPLIT] == 5
    named = list(convert_visual_genome(regions, image_data, images, split="test"))
    assert {s.split for s in named} == {"test"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r[0]["regions"][1].pop("phrase"),
         r"region_descriptions.json: image 0 \(id 1\), region 1 \(region_id 12\): "
         r"missing field\(s\) phrase"),
        (lambda r: r[1]["regions"][0].update(image_id=7),
         r"image 1 \(id 2\), region 0 \(region_id 21\): image_id 7 is not in the image data"),
        (lambda r: r[0]["regions"][0].update(width=-3),
         r"region 0 \(region_id 11\): 'x, y, width, height' has a negative width"),
        (lambda r: r[1].pop("regions"), r"image 1 \(id 2\): no 'regions' list"),
    ],
)  # fmt: skip
def test_malformed_records_name_file_and_record(visual_genome, change, message):
    regions, image_data, images = visual_genome
    data = json.loads(regions.read_text())
    change(data)
    regions.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=message) as caught:
        list(convert_visual_genome(regions, image_data, images))
    assert "\n" not in str(caught.value)
    stats = ConversionStats()
    list(convert_visual_genome(regions, image_data, images, skip_bad=True, stats=stats))
    assert stats.skipped[MALFORMED] == 1


def test_malformed_files(visual_genome, tmp_path):
    regions, image_data, images = visual_genome
    image_data.write_text(json.dumps([{"image_id": 1, "width": 0, "height": 5}]))
    with pytest.raises(DataFormatError, match=r"image_data.json: image 0 \(image_id 1\): 'width'"):
        list(convert_visual_genome(regions, image_data, images))
    regions.write_text("[{oops")
    image_data.write_text(json.dumps(IMAGE_DATA))
    with pytest.raises(DataFormatError, match=r"region_descriptions.json:1: not JSON"):
        list(convert_visual_genome(regions, image_data, images, skip_bad=True))
    split_file = tmp_path / "splits.json"
    split_file.write_text(json.dumps({"train": [1], "val": [1]}))
    with pytest.raises(DataFormatError, match="image 1 is in both 'train' and 'val'"):
        list(convert_visual_genome(regions, image_data, images, split_file=split_file))


def test_cli_visual_genome(visual_genome, tmp_path):
    regions, image_data, images = visual_genome
    out = tmp_path / "vg" / "vg.jsonl"
    result = runner.invoke(app, ["data", "prepare", "visual-genome", "--regions", str(regions),
                                 "--image-data", str(image_data), "--images", str(images),
                                 "--out", str(out), "--split", "val"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"wrote 6 samples to {out}; skipped 3 (" in result.stdout
    assert [s.split for s in read_samples(out)] == ["val"] * 6
    result = runner.invoke(app, ["data", "prepare", "visual-genome", "--regions", str(tmp_path),
                                 "--image-data", str(image_data), "--images", str(images),
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
