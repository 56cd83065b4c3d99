"""Dataset converters on small format-exact fixtures: counts, boxes, skips, splits, errors.

Every expected box is worked out here from the fixture's own numbers (COCO ``[x, y, w, h]``
-> ``[x, y, x + w, y + h]``; Flickr30k's 1-based corners minus 1; unions by hand).
"""

from __future__ import annotations

import collections
import json
import pickle
import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sceneloc.data import read_samples
from sceneloc.data.coco import convert_coco
from sceneloc.data.convert import MALFORMED, ConversionStats, image_ref
from sceneloc.data.flickr30k import (
    MISSING,
    NO_BOX,
    NOT_VISUAL,
    SCENE,
    convert_flickr30k_entities,
    parse_caption,
)
from sceneloc.data.odvg import EMPTY, convert_odvg
from sceneloc.data.refcoco import convert_refcoco
from sceneloc.errors import DataFormatError

runner = CliRunner()

# ---------------------------------------------------------------- COCO (and RefCOCO's instances)

DOG, PERSON = 18, 1
DOG_BOX = [10, 20, 30, 40]  # image 1
PERSON_BOXES = [[0, 0, 5, 5], [50, 10, 20, 30]]  # image 1, two instances
SMALL_DOG_BOX = [1.5, 2.5, 3, 4]  # image 2
CROWD_BOX = [0, 0, 100, 80]  # image 2, iscrowd


def xyxy(b):
    return [b[0], b[1], b[0] + b[2], b[1] + b[3]]


def coco_data(file_names: bool = True) -> dict:
    images = [
        {"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "width": 100, "height": 80}
        for i in (1, 2, 3)
    ]
    if not file_names:
        del images[1]["file_name"]
    return {
        "images": images,
        "categories": [{"id": PERSON, "name": "person"}, {"id": DOG, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": DOG, "bbox": DOG_BOX, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": PERSON, "bbox": PERSON_BOXES[0], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": PERSON, "bbox": PERSON_BOXES[1], "iscrowd": 0},
            {"id": 13, "image_id": 2, "category_id": DOG, "bbox": SMALL_DOG_BOX, "iscrowd": 0},
            {"id": 14, "image_id": 2, "category_id": PERSON, "bbox": CROWD_BOX, "iscrowd": 1},
        ],
    }  # fmt: skip


@pytest.fixture
def coco(tmp_path):
    images = tmp_path / "coco" / "images"
    images.mkdir(parents=True)
    path = tmp_path / "coco" / "instances_val2017.json"
    path.write_text(json.dumps(coco_data()))
    return path, images


def test_coco_one_sample_per_category_and_image(coco, tmp_path):
    path, images = coco
    stats = ConversionStats()
    samples = list(convert_coco(path, images, stats=stats))
    # image 1: person (2 instances), dog; image 2: dog (its crowd person is left out); image 3: -
    assert [s.id for s in samples] == ["1-1", "1-18", "2-18"]
    person, dog, small_dog = samples
    assert person.query == person.category == "person" and dog.query == "dog"
    assert person.boxes == [xyxy(b) for b in PERSON_BOXES]
    (x1, y1, w1, h1), (x2, y2, w2, h2) = PERSON_BOXES
    assert person.box == [min(x1, x2), min(y1, y2), max(x1 + w1, x2 + w2), max(y1 + h1, y2 + h2)]
    assert dog.box == xyxy(DOG_BOX) and dog.boxes is None
    assert small_dog.box == [1.5, 2.5, 1.5 + 3, 2.5 + 4]
    assert {s.split for s in samples} == {"val2017"}  # from instances_val2017.json
    assert [s.image_id for s in samples] == [1, 1, 2]
    assert small_dog.image == str(images / "COCO_train2014_000000000002.jpg")  # no relative_to
    assert stats.samples == 3 and stats.skipped == {"crowd annotations": 1}


def test_coco_include_crowd_and_split(coco):
    path, images = coco
    samples = list(convert_coco(path, images, "minival", include_crowd=True))
    assert [s.id for s in samples] == ["1-1", "1-18", "2-1", "2-18"]
    assert samples[2].box == xyxy(CROWD_BOX)
    assert {s.split for s in samples} == {"minival"}


def test_coco_malformed_annotation_names_file_and_record(coco):
    path, images = coco
    data = coco_data()
    data["annotations"][2]["bbox"] = [1, 2, 3]
    path.write_text(json.dumps(data))
    message = r"instances_val2017\.json: annotation 2 \(id 12\): 'bbox'"
    with pytest.raises(DataFormatError, match=message):
        list(convert_coco(path, images))
    stats = ConversionStats()
    samples = list(convert_coco(path, images, skip_bad=True, stats=stats))
    assert samples[0].id == "1-1" and samples[0].box == xyxy(PERSON_BOXES[0])  # one person left
    assert stats.skipped[MALFORMED] == 1 and stats.samples == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"images": [], "annotations": [', r"instances_val2017\.json:1: not JSON"),
        ('{"images": [], "categories": []}', r"instances_val2017\.json: not a COCO file"),
        ("[1, 2]", r"must be a JSON object"),
    ],
)
def test_coco_malformed_file(coco, content, message):
    path, images = coco
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message):
        list(convert_coco(path, images, skip_bad=True))  # a broken file cannot be skipped


def test_coco_missing_inputs(coco, tmp_path):
    path, images = coco
    with pytest.raises(DataFormatError, match=r"nope\.json does not exist"):
        list(convert_coco(tmp_path / "nope.json", images))
    with pytest.raises(DataFormatError, match=r"image folder .*no-images does not exist"):
        list(convert_coco(path, tmp_path / "no-images"))


def test_image_path_rule(tmp_path):
    out_dir = tmp_path / "out"
    assert image_ref(out_dir / "images" / "a.jpg", out_dir) == "images/a.jpg"
    assert image_ref(tmp_path / "elsewhere" / "a.jpg", out_dir) == str(tmp_path / "elsewhere/a.jpg")
    assert image_ref(Path("x") / ".." / "a.jpg", None) == str(Path.cwd() / "a.jpg")


# ---------------------------------------------------------------------------------- RefCOCO

REFS = [
    {"ref_id": 0, "ann_id": 10, "image_id": 1, "split": "train", "category_id": DOG,
     "sentences": [{"sent": "the dog", "raw": "The dog.", "tokens": ["the", "dog"], "sent_id": 0},
                   {"sent": "brown dog on left", "raw": "Brown dog, on left",
                    "tokens": ["brown", "dog", "on", "left"], "sent_id": 1}]},
    {"ref_id": 1, "ann_id": 12, "image_id": 1, "split": "val", "category_id": PERSON,
     "sentences": [{"sent": "person on right", "raw": "person on right",
                    "tokens": ["person", "on", "right"], "sent_id": 2}]},
    {"ref_id": 2, "ann_id": 13, "image_id": 2, "split": "testA", "category_id": DOG,
     "sentences": [{"sent": "small dog", "raw": "small dog", "tokens": ["small", "dog"],
                    "sent_id": 3},
                   {"sent": "", "raw": "Dog!", "tokens": [], "sent_id": 4}]},
]  # fmt: skip


def py2_pickle(value) -> bytes:
    """A protocol-2 pickle as Python 2 wrote one: every string a byte string."""
    return b"\x80\x02" + py2_value(value) + b"."


def py2_value(value) -> bytes:
    if isinstance(value, dict):
        body = b"".join(py2_value(k) + py2_value(v) for k, v in value.items())
        return b"}(" + body + b"u"
    if isinstance(value, list):
        return b"](" + b"".join(py2_value(v) for v in value) + b"e"
    if isinstance(value, str):
        data = value.encode()
        return b"U" + bytes([len(data)]) + data  # SHORT_BINSTRING
    if isinstance(value, int):
        return b"J" + struct.pack("<i", value)  # BININT
    raise TypeError(value)


def write_refer(root: Path, refs=REFS, dataset="refcoco", split_by="unc", raw=None, **kwargs):
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    data = raw if raw is not None else pickle.dumps(refs)
    (folder / f"refs({split_by}).p").write_bytes(data)
    (folder / "instances.json").write_text(json.dumps(coco_data(**kwargs)))
    return folder


@pytest.fixture
def refer(tmp_path):
    root, images = tmp_path / "refer", tmp_path / "train2014"
    images.mkdir()
    write_refer(root)
    return root, images


def test_refcoco_one_sample_per_sentence_of_the_split(refer):
    root, images = refer
    stats = ConversionStats()
    (sample,) = convert_refcoco(root, images, "refcoco", "unc", "val", stats=stats)
    assert sample.id == "1-2" and sample.query == "person on right"
    assert sample.box == xyxy(PERSON_BOXES[1])  # ann 12
    assert sample.category == "person" and sample.image_id == 1 and sample.split == "val"
    assert sample.image == str(images / "COCO_train2014_000000000001.jpg")
    assert stats.samples == 1 and not stats.skipped

    test_a = list(convert_refcoco(root, images, split="testA"))
    assert [s.id for s in test_a] == ["2-3", "2-4"]
    assert [s.query for s in test_a] == ["small dog", "Dog!"]  # "raw" when "sent" is blank
    assert test_a[0].box == [1.5, 2.5, 1.5 + 3, 2.5 + 4]

    every = list(convert_refcoco(root, images, split="all"))
    assert len(every) == sum(len(ref["sentences"]) for ref in REFS) == 5
    assert [s.split for s in every] == ["train", "train", "val", "testA", "testA"]


def test_refcoco_python2_pickle_and_file_name_pattern(tmp_path):
    images = tmp_path / "train2014"
    images.mkdir()
    write_refer(tmp_path, dataset="refcocog", split_by="umd", raw=py2_pickle(REFS),
                file_names=False)  # fmt: skip
    samples = list(convert_refcoco(tmp_path, images, "refcocog", "umd", "testA",
                                   relative_to=tmp_path))  # fmt: skip
    assert [s.query for s in samples] == ["small dog", "Dog!"]
    assert samples[0].image == "train2014/COCO_train2014_000000000002.jpg"  # %012d pattern


@pytest.mark.parametrize(
    ("dataset", "split_by", "message"),
    [
        ("refcoco+", "google", r"refcoco\+ has no 'google' splits, only unc"),
        ("refcocog", "unc", "refcocog has no 'unc' splits, only umd or google"),
        ("refcoco", "umd", "refcoco has no 'umd' splits, only unc or google"),
        ("refclef", "unc", "unknown dataset 'refclef'"),
    ],
)
def test_refcoco_rejects_unpublished_combinations(refer, dataset, split_by, message):
    root, images = refer
    with pytest.raises(DataFormatError, match=message):
        list(convert_refcoco(root, images, dataset, split_by, "val"))


def test_refcoco_unknown_split_lists_the_splits(refer):
    root, images = refer
    message = r"no refs in split 'testC' \(it has: testA, train, val\)"
    with pytest.raises(DataFormatError, match=message):
        list(convert_refcoco(root, images, split="testC"))


def test_refcoco_malformed_ref_names_file_and_ref(tmp_path):
    images = tmp_path / "train2014"
    images.mkdir()
    refs = [dict(ref) for ref in REFS]
    del refs[2]["ann_id"]
    write_refer(tmp_path, refs=refs)
    message = r"refs\(unc\)\.p: ref 2 \(ref_id 2\): missing field\(s\) ann_id"
    with pytest.raises(DataFormatError, match=message):
        list(convert_refcoco(tmp_path, images, split="all"))
    stats = ConversionStats()
    samples = list(convert_refcoco(tmp_path, images, split="all", skip_bad=True, stats=stats))
    assert len(samples) == 3 and stats.skipped == {MALFORMED: 1}
    # a malformed ref outside the chosen split is never read
    assert len(list(convert_refcoco(tmp_path, images, split="val"))) == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not a pickle at all", r"refs\(unc\)\.p: not a readable refs pickle"),
        (pickle.dumps([collections.OrderedDict()]), "refusing to load collections.OrderedDict"),
        (pickle.dumps({"refs": []}), "must hold a list of refs"),
    ],
)
def test_refcoco_malformed_pickle(tmp_path, raw, message):
    images = tmp_path / "train2014"
    images.mkdir()
    write_refer(tmp_path, raw=raw)
    with pytest.raises(DataFormatError, match=message):
        list(convert_refcoco(tmp_path, images, split="val", skip_bad=True))


def test_refcoco_missing_layout(tmp_path):
    images = tmp_path / "train2014"
    images.mkdir()
    with pytest.raises(DataFormatError, match=r"refcoco folder \(refer layout\) .* does not exist"):
        list(convert_refcoco(tmp_path, images, split="val"))
    (tmp_path / "refcoco").mkdir()
    with pytest.raises(DataFormatError, match=r"refs file .*refs\(unc\)\.p does not exist"):
        list(convert_refcoco(tmp_path, images, split="val"))


# -------------------------------------------------------------------------- Flickr30k Entities

# 1-based corners as in the XML files
MAN = (11, 21, 111, 221)
DOGS = [(201, 101, 251, 151), (301, 151, 341, 201)]  # the second object also names entity 2

SENTENCES = (
    "[/EN#1/people A man] in [/EN#2/clothing a red shirt] walks "
    "[/EN#3/animals/other two dogs] in [/EN#4/scene a park] .\n"
    "[/EN#1/people Someone] is with [/EN#0/notvisual nobody] near [/EN#5/other a ghost] .\n"
)


def bndbox(corners) -> str:
    xmin, ymin, xmax, ymax = corners
    return (f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>")  # fmt: skip


ANNOTATION = f"""<annotation>
<filename>100.jpg</filename>
<size><width>500</width><height>375</height><depth>3</depth></size>
<object><name>1</name>{bndbox(MAN)}</object>
<object><name>3</name>{bndbox(DOGS[0])}</object>
<object><name>3</name><name>2</name>{bndbox(DOGS[1])}</object>
<object><name>5</name><nobndbox>1</nobndbox><scene>0</scene></object>
<object><name>4</name><nobndbox>0</nobndbox><scene>1</scene></object>
</annotation>
"""


def zero_based(corners):
    return [float(v - 1) for v in corners]


@pytest.fixture
def flickr(tmp_path):
    root = tmp_path / "flickr30k"
    for name in ("Sentences", "Annotations", "flickr30k-images"):
        (root / name).mkdir(parents=True)
    (root / "Sentences" / "100.txt").write_text(SENTENCES)
    (root / "Annotations" / "100.xml").write_text(ANNOTATION)
    split_file = tmp_path / "val.txt"
    split_file.write_text("100\n\n")
    return root, split_file


def add_image(root: Path, image_id: str, sentences: str, annotation: str) -> None:
    (root / "Sentences" / f"{image_id}.txt").write_text(sentences)
    (root / "Annotations" / f"{image_id}.xml").write_text(annotation)


def test_flickr30k_one_sample_per_phrase_with_a_box(flickr):
    root, split_file = flickr
    stats = ConversionStats()
    samples = list(convert_flickr30k_entities(root, split_file, stats=stats))
    assert [s.id for s in samples] == ["100-0-0", "100-0-1", "100-0-2", "100-1-0"]
    man, shirt, dogs, someone = samples
    assert [s.query for s in samples] == ["A man", "a red shirt", "two dogs", "Someone"]
    assert [s.type for s in samples] == ["people", "clothing", "animals", "people"]
    assert man.box == zero_based(MAN) and man.boxes is None and someone.box == man.box
    assert shirt.box == zero_based(DOGS[1])  # the object with two names
    assert dogs.boxes == [zero_based(DOGS[0]), zero_based(DOGS[1])]
    assert dogs.box == [200.0, 100.0, 340.0, 200.0]  # union of the two, 0-based
    assert {s.split for s in samples} == {"val"} and {s.image_id for s in samples} == {"100"}
    assert man.image == str(root / "flickr30k-images" / "100.jpg")
    # "a park" is the scene, "nobody" not visual, "a ghost" has <nobndbox>
    assert stats.samples == 4 and stats.skipped == {SCENE: 1, NOT_VISUAL: 1, NO_BOX: 1}


def test_flickr30k_split_name_and_relative_images(flickr):
    root, split_file = flickr
    samples = list(convert_flickr30k_entities(root, split_file, "minival", relative_to=root))
    assert {s.split for s in samples} == {"minival"}
    assert samples[0].image == "flickr30k-images/100.jpg"


def test_parse_caption():
    (phrase,) = parse_caption("[/EN#7/people/other Two young guys] talk .")
    assert (phrase.entity, phrase.types) == ("7", ["people", "other"])
    assert phrase.text == "Two young guys"
    for bad in ("[/EN#7/people unclosed phrase", "a ] stray bracket", "[EN#7/people x]"):
        with pytest.raises(ValueError, match="malformed phrase markup"):
            parse_caption(bad)


def test_flickr30k_malformed_caption_names_file_and_line(flickr):
    root, split_file = flickr
    add_image(root, "200", "[/EN#1/people A woman] sits .\n[/EN#2/people broken .\n", ANNOTATION)
    split_file.write_text("100\n200\n")
    with pytest.raises(DataFormatError, match=r"Sentences/200\.txt:2: malformed phrase markup"):
        list(convert_flickr30k_entities(root, split_file))
    stats = ConversionStats()
    samples = list(convert_flickr30k_entities(root, split_file, skip_bad=True, stats=stats))
    assert samples[-1].id == "200-0-0" and samples[-1].query == "A woman"
    assert stats.samples == 4 + 1 and stats.skipped[MALFORMED] == 1


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ("<annotation><object><name>1</name>", r"Annotations/300\.xml:1: not XML"),
        ("<annotation><object><name>1</name><bndbox><xmin>a</xmin></bndbox></object></annotation>",
         r"Annotations/300\.xml: <object> 1 \(1\): <bndbox> needs a numeric <xmin>"),
        ("<annotation><object><nobndbox>1</nobndbox></object></annotation>",
         r"Annotations/300\.xml: <object> 1: no <name>"),
    ],
)  # fmt: skip
def test_flickr30k_malformed_xml_names_file(flickr, annotation, message):
    root, split_file = flickr
    add_image(root, "300", "[/EN#1/people A man] .\n", annotation)
    split_file.write_text("300\n100\n")
    with pytest.raises(DataFormatError, match=message):
        list(convert_flickr30k_entities(root, split_file))
    stats = ConversionStats()
    samples = list(convert_flickr30k_entities(root, split_file, skip_bad=True, stats=stats))
    assert len(samples) == 4 and stats.skipped[MALFORMED] == 1  # image 300 skipped whole


def test_flickr30k_missing_files(flickr, tmp_path):
    root, split_file = flickr
    split_file.write_text("100\n999\n")
    message = r"val\.txt:2: image 999: missing .*999\.txt, .*999\.xml"
    with pytest.raises(DataFormatError, match=message):
        list(convert_flickr30k_entities(root, split_file))
    stats = ConversionStats()
    assert len(list(convert_flickr30k_entities(root, split_file, skip_bad=True, stats=stats))) == 4
    assert stats.skipped[MISSING] == 1
    with pytest.raises(DataFormatError, match=r"split file .*test\.txt does not exist"):
        list(convert_flickr30k_entities(root, tmp_path / "test.txt"))
    with pytest.raises(DataFormatError, match=r"Sentences folder .*Sentences does not exist"):
        list(convert_flickr30k_entities(tmp_path, split_file))


# ------------------------------------------------------------------------------------- ODVG

CAT = [1, 2, 30, 40]
TWO_DOGS = [[50, 60, 70, 80], [90, 10, 120, 50]]
PEOPLE = [[0, 0, 10, 10], [30, 30, 40, 45]]
CAR = [5, 5, 20, 25]
DOTS = [[1, 1, 2, 2], [3, 3, 4, 4]]

ODVG_RECORDS = [
    {"filename": "g1.jpg", "height": 100, "width": 200,
     "grounding": {"caption": "a cat and two dogs",
                   "regions": [{"bbox": CAT, "phrase": "a cat"},
                               {"bbox": TWO_DOGS[0], "phrase": "two dogs"},
                               {"bbox": TWO_DOGS[1], "phrase": "two dogs"}]}},
    None,  # a blank line
    {"filename": "sub/d1.jpg", "height": 100, "width": 200,
     "detection": {"instances": [{"bbox": PEOPLE[0], "label": 0, "category": "person"},
                                 {"bbox": CAR, "label": 2, "category": "car"},
                                 {"bbox": PEOPLE[1], "label": 0, "category": "person"}]}},
    {"filename": "empty.jpg", "height": 10, "width": 10, "detection": {"instances": []}},
    {"filename": "g2.jpg", "height": 10, "width": 10,
     "grounding": {"caption": "dots", "regions": [{"bbox": DOTS, "phrase": "dots"}]}},
]  # fmt: skip


def write_odvg(path: Path, records) -> Path:
    lines = [r if isinstance(r, str) else "" if r is None else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def odvg(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    return write_odvg(tmp_path / "train_odvg.jsonl", ODVG_RECORDS), images


def test_odvg_grounding_and_detection(odvg):
    path, images = odvg
    stats = ConversionStats()
    samples = list(convert_odvg(path, images, stats=stats))
    assert [s.id for s in samples] == ["1-0", "1-1", "3-0", "3-1", "5-0"]  # line-index
    cat, dogs, people, car, dots = samples
    assert [s.query for s in samples] == ["a cat", "two dogs", "person", "car", "dots"]
    assert cat.box == CAT and cat.boxes is None and cat.category is None
    assert dogs.boxes == TWO_DOGS and dogs.box == [50, 10, 120, 80]
    assert people.boxes == PEOPLE and people.box == [0, 0, 40, 45] and people.category == "person"
    assert car.box == CAR and car.boxes is None
    assert dots.boxes == DOTS and dots.box == [1, 1, 4, 4]  # a region holding a list of boxes
    assert people.image == str(images / "sub" / "d1.jpg")
    assert {s.split for s in samples} == {"train_odvg"}  # the file's stem
    assert stats.samples == 5 and stats.skipped == {EMPTY: 1}


def test_odvg_label_map_names_instances_without_category(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    record = {"filename": "a.jpg", "detection": {"instances": [{"bbox": CAR, "label": 2}]}}
    path = write_odvg(tmp_path / "od.jsonl", [record])
    (tmp_path / "labels.json").write_text(json.dumps({"0": "person", "2": "car"}))
    (sample,) = convert_odvg(path, images, "val", label_map=tmp_path / "labels.json")
    assert sample.query == sample.category == "car" and sample.split == "val"
    message = re.escape("od.jsonl:1: instance 0 has no 'category' (a label map can name")
    with pytest.raises(DataFormatError, match=message):
        list(convert_odvg(path, images))


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{oops", "not JSON"),
        ('{"grounding": {"regions": []}}', "a record needs a non-empty string 'filename'"),
        ('{"filename": "a.jpg"}', "neither 'grounding' nor 'detection'"),
        ('{"filename": "a.jpg", "grounding": {"regions": [{"bbox": [5, 0, 1, 1], "phrase": "x"}]}}',
         "region 0 bbox' must be finite with x1 <= x2"),
        ('{"filename": "a.jpg", "detection": {"instances": [{"bbox": [0, 0, 1], "label": 0}]}}',
         "instance 0 has no 'category' (a label map can name its 'label')"),
        ('{"filename": "a.jpg", "detection": {"instances": [{"bbox": [0, 1], "category": "x"}]}}',
         "instance 0 bbox' must be [x1, y1, x2, y2]"),
    ],
)  # fmt: skip
def test_odvg_malformed_line_names_file_and_line(odvg, line, problem):
    path, images = odvg
    write_odvg(path, [ODVG_RECORDS[0], line, ODVG_RECORDS[2]])
    with pytest.raises(DataFormatError, match=rf"train_odvg\.jsonl:2: .*{re.escape(problem)}"):
        list(convert_odvg(path, images))
    stats = ConversionStats()
    samples = list(convert_odvg(path, images, skip_bad=True, stats=stats))
    assert len(samples) == 2 + 2 and stats.skipped == {MALFORMED: 1}


def test_odvg_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"ODVG file .*none\.jsonl does not exist"):
        list(convert_odvg(tmp_path / "none.jsonl", tmp_path))


# ---------------------------------------------------------------------------------------- CLI


def prepare(*args: str):
    from sceneloc.cli import app

    return runner.invoke(app, ["data", "prepare", *map(str, args)])


def test_cli_coco_writes_samples_and_one_line_summary(coco, tmp_path):
    path, images = coco
    out = tmp_path / "coco" / "prepared" / "val.jsonl"
    result = prepare("coco", "--annotations", path, "--images", images, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines() == [
        f"wrote 3 samples to {out}; skipped 1 (crowd annotations: 1)"
    ]
    samples = list(read_samples(out))
    assert [s.id for s in samples] == ["1-1", "1-18", "2-18"]
    assert samples[0].image == str(images / "COCO_train2014_000000000001.jpg")  # not under out/


def test_cli_refcoco_relative_image_paths(refer, tmp_path):
    root, images = refer
    out = tmp_path / "refcoco_val.jsonl"  # images lie under the output's folder
    result = prepare("refcoco", "--refer-root", root, "--images", images, "--dataset", "refcoco",
                     "--split-by", "google", "--split", "val", "--out", out)  # fmt: skip
    assert result.exit_code == 2 and "refs(google).p does not exist" in result.stderr
    result = prepare("refcoco", "--refer-root", root, "--images", images, "--split", "val",
                     "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    (sample,) = read_samples(out)
    assert sample.image == "train2014/COCO_train2014_000000000001.jpg"
    assert sample.image_path(out.parent) == images / "COCO_train2014_000000000001.jpg"


def test_cli_flickr30k_prints_skipped_phrases(flickr, tmp_path):
    root, split_file = flickr
    out = tmp_path / "val.jsonl"
    result = prepare("flickr30k-entities", "--root", root, "--split-file", split_file, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"wrote 4 samples to {out}; skipped 3 (" in result.stdout
    for reason in (SCENE, NOT_VISUAL, NO_BOX):
        assert f"{reason}: 1" in result.stdout
    assert len(list(read_samples(out))) == 4


def test_cli_odvg_skip_bad_counts(odvg, tmp_path):
    path, images = odvg
    write_odvg(path, [ODVG_RECORDS[0], "{oops", ODVG_RECORDS[2]])
    out = tmp_path / "odvg.jsonl"
    result = prepare("odvg", "--input", path, "--images", images, "--out", out, "--split", "val")
    assert result.exit_code == 2 and not out.exists()
    result = prepare("odvg", "--input", path, "--images", images, "--out", out, "--split", "val",
                     "--skip-bad")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"wrote 4 samples to {out}; skipped 1 (malformed records: 1)" in result.stdout
    assert {s.split for s in read_samples(out)} == {"val"}


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("odvg", r"train_odvg.jsonl:2: not JSON"),
        ("flickr", r"Sentences/100.txt:1: malformed phrase markup (expected [/EN#<id>/<type>"),
        ("refcoco", "refcoco+ has no 'umd' splits"),
        ("coco", "instances_val2017.json:1: not JSON"),
    ],
)
def test_cli_errors_exit_2_with_one_line(command, message, odvg, flickr, coco, refer, tmp_path):
    out = tmp_path / "out" / "samples.jsonl"
    if command == "odvg":
        path, images = odvg
        write_odvg(path, [ODVG_RECORDS[0], "{oops"])
        args = ["odvg", "--input", path, "--images", images]
    elif command == "flickr":
        root, split_file = flickr
        (root / "Sentences" / "100.txt").write_text("[/EN#1/people A man .\n")
        args = ["flickr30k-entities", "--root", root, "--split-file", split_file]
    elif command == "refcoco":
        root, images = refer
        args = ["refcoco", "--refer-root", root, "--images", images, "--split", "val",
                "--dataset", "refcoco+", "--split-by", "umd"]  # fmt: skip
    else:
        path, images = coco
        path.write_text("{")
        args = ["coco", "--annotations", path, "--images", images]
    result = prepare(*args, "--out", out)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output and result.stdout == ""
    assert not out.exists() and not list(tmp_path.rglob("*.partial"))  # no partial output
