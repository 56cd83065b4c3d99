"""Synthetic scenes: reproducible, dense, and every query with exactly one referent."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sceneloc.boxes import union_box
from sceneloc.cli.synth import synth
from sceneloc.data import read_samples
from sceneloc.data.synth import (
    COLORS,
    HELD_OUT,
    QUERY_TYPES,
    SHAPES,
    AttributeQuery,
    Desc,
    GroupQuery,
    OrdinalQuery,
    RelationQuery,
    SceneObject,
    SynthError,
    generate,
    make_scene,
    parse_query,
    parse_splits,
    render_query,
    resolve,
    spec_from_dict,
    split_counts,
    target_ids,
    with_target,
)

SMALL = {"size": 192, "min_objects": 8, "max_objects": 14, "queries_per_image": 6}
SPLITS = "train=0.5,val=0.1,test=0.1,compositional=0.3"
runner = CliRunner()


def load(out):
    samples = list(read_samples(out / "annotations.jsonl"))
    lines = (out / "scenes.jsonl").read_text().splitlines()
    scenes = {record["image"]: record for record in map(json.loads, lines)}
    return samples, scenes


def objects_of(scene: dict) -> list[SceneObject]:
    return [SceneObject.from_dict(o) for o in scene["objects"]]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "dataset"
    stats = generate(out, 16, seed=7, splits=SPLITS, **SMALL)
    return out, stats, *load(out)


def test_layout_and_stats(dataset):
    out, stats, samples, scenes = dataset
    assert stats.images == {"train": 8, "val": 2, "test": 1, "compositional": 5}
    assert stats.num_samples == len(samples) and stats.images_per_minute > 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}.png" for i in range(16)]
    assert len(scenes) == 16 and set(scenes) == {s.image for s in samples}
    first = scenes["images/000000.png"]
    assert {"image", "image_id", "width", "height", "split", "objects"} <= set(first)
    assert first["image_id"] == "000000" and first["width"] == first["height"] == 192
    assert set(first["objects"][0]) >= {"id", "shape", "color", "size", "box"}
    assert [o["id"] for o in first["objects"]] == list(range(len(first["objects"])))


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    paths = [tmp_path / name for name in ("a", "b", "c")]
    for path, seed in zip(paths, (5, 5, 6)):
        generate(path, 3, seed=seed, **SMALL)
    same, other = paths[1], paths[2]
    for name in ("annotations.jsonl", "scenes.jsonl", *(f"images/{i:06d}.png" for i in range(3))):
        assert (paths[0] / name).read_bytes() == (same / name).read_bytes(), name
        assert (paths[0] / name).read_bytes() != (other / name).read_bytes(), name


def test_make_scene_in_memory_is_deterministic():
    one, two = (make_scene(np.random.default_rng(11), **SMALL) for _ in range(2))
    assert np.array_equal(np.asarray(one.image), np.asarray(two.image))
    assert one.samples == two.samples and one.objects == two.objects
    assert one.image.size == (192, 192) and one.samples[0].image == "images/000000.png"


def test_object_counts_within_range(dataset):
    _, stats, _, scenes = dataset
    counts = [len(scene["objects"]) for scene in scenes.values()]
    assert all(8 <= n <= 14 for n in counts)
    assert stats.objects == sum(counts)
    dense = make_scene(np.random.default_rng(3))  # the defaults: 20 to 60 on 512 px
    assert 20 <= len(dense.objects) <= 60 and dense.image.size == (512, 512)


def test_every_query_has_exactly_one_referent(dataset):
    _, _, samples, scenes = dataset
    for sample in samples:
        scene = scenes[sample.image]
        objects = objects_of(scene)
        spec = parse_query(sample.query)  # resolved from the text itself
        stored = next(q for q in scene["queries"] if q["id"] == sample.id)
        assert spec == spec_from_dict(stored["spec"]) and stored["query"] == sample.query
        matches = resolve(spec, objects)
        assert len(matches) == 1, (sample.query, matches)
        assert matches[0] in resolve(spec, objects, strict=True), sample.query
        targets = target_ids(spec, matches[0])
        assert list(targets) == stored["target"]
        assert union_box([objects[i].box for i in targets]) == sample.box
        assert sample.category == objects[targets[0]].shape
        assert sample.split == scene["split"] and sample.image_id == scene["image_id"]


def test_every_query_has_a_same_shape_distractor(dataset):
    _, _, samples, scenes = dataset
    for sample in samples:
        objects = objects_of(scenes[sample.image])
        spec = parse_query(sample.query)
        named = resolve(spec, objects)[0]
        assert any(o.shape == sample.category and o.id not in named for o in objects)


def test_compositional_targets_never_named_in_train(dataset):
    _, _, samples, scenes = dataset
    named_in: dict[str, set] = {}
    targets_in: dict[str, set] = {}
    for sample in samples:
        objects = objects_of(scenes[sample.image])
        spec = parse_query(sample.query)
        match = resolve(spec, objects)[0]
        named_in.setdefault(sample.split, set()).update(objects[i].pair for i in match)
        targets_in.setdefault(sample.split, set()).add(objects[match[0]].pair)
    assert targets_in["compositional"] and targets_in["compositional"] <= HELD_OUT
    for split in ("train", "val", "test"):
        assert not named_in[split] & HELD_OUT
    assert not targets_in["compositional"] & named_in["train"]


def test_all_query_types_present(dataset):
    _, stats, samples, _ = dataset
    assert {s.type for s in samples} == set(QUERY_TYPES)
    assert all(stats.types[t] > 0 for t in QUERY_TYPES)
    for split in ("train", "compositional"):
        assert {s.type for s in samples if s.split == split} == set(QUERY_TYPES)


def test_boxes_inside_the_image(dataset):
    from PIL import Image

    out, _, samples, scenes = dataset
    for scene in scenes.values():
        width, height = scene["width"], scene["height"]
        assert Image.open(out / scene["image"]).size == (width, height)
        for obj in scene["objects"]:
            x1, y1, x2, y2 = obj["box"]
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert obj["visible"] >= 0.7
    for sample in samples:
        x1, y1, x2, y2 = sample.box
        assert 0 <= x1 < x2 <= 192 and 0 <= y1 < y2 <= 192


def test_shapes_are_drawn_in_their_boxes():
    scene = make_scene(np.random.default_rng(5), size=256, min_objects=20, max_objects=30)
    pixels = np.asarray(scene.image).astype(int)
    for obj in scene.objects:
        x1, y1, x2, y2 = (int(v) for v in obj.box)
        crop = pixels[y1:y2, x1:x2]
        fill = np.array(COLORS[obj.color])
        inside = np.abs(crop - fill).max(axis=2) <= 12
        edge = np.abs(crop - 0.55 * fill).max(axis=2) <= 10  # the darker outline
        assert inside.sum() >= 0.3 * obj.area, obj
        drawn = inside | edge
        rows, cols = drawn.any(axis=1), drawn.any(axis=0)
        if obj.visible == 1.0:  # the box is tight: the shape reaches every side of it
            assert rows.all() and cols.all(), obj
        assert rows.mean() >= 0.7 and cols.mean() >= 0.7, obj


def test_parse_query_reads_every_phrasing():
    assert parse_query("the big purple star") == AttributeQuery(Desc("star", "purple", "large"))
    assert parse_query("The circle to the left of the little blue square") == RelationQuery(
        Desc("circle"), "left of", Desc("square", "blue", "small")
    )
    assert parse_query("the second triangle from the top") == OrdinalQuery(
        Desc("triangle"), "top", 2
    )
    assert parse_query("the biggest red shape") == OrdinalQuery(Desc(color="red"), "largest")
    assert parse_query("three yellow crosses in a row") == GroupQuery(
        "row", (Desc("cross", "yellow"),) * 3
    )
    assert parse_query("the green triangle on top of the orange hexagon") == GroupQuery(
        "on top of", (Desc("triangle", "green"), Desc("hexagon", "orange"))
    )
    rng = np.random.default_rng(0)
    spec = RelationQuery(Desc("star", "red"), "below", Desc("circle", size="medium"))
    assert all(parse_query(render_query(spec, rng)) == spec for _ in range(10))
    for text in ("the unicorn", "a red star", "the shape", "five red stars in a row"):
        with pytest.raises(ValueError):
            parse_query(text)


def obj(i, shape, color, size, x, y, d=20.0):
    return SceneObject(i, shape, color, size, (x, y, x + d, y + d))


def test_resolver_finds_ambiguity():
    square = obj(0, "square", "blue", "large", 100, 100, 40)
    near, far = obj(1, "circle", "red", "small", 60, 110), obj(2, "circle", "red", "small", 20, 105)
    left = RelationQuery(Desc("circle"), "left of", Desc("square", "blue"))
    assert resolve(left, [square, near, obj(3, "circle", "red", "small", 300, 300)]) == [(1, 0)]
    assert len(resolve(left, [square, near, far])) == 2  # two circles to its left
    second = obj(4, "square", "blue", "large", 200, 300, 40)
    assert len(resolve(left, [square, second, near])) >= 2  # which blue square?
    leftmost = OrdinalQuery(Desc("circle"), "left")
    assert resolve(leftmost, [near, far]) == [(2,)]
    assert len(resolve(leftmost, [near, obj(5, "circle", "red", "small", 63, 10)])) == 2
    largest = OrdinalQuery(Desc(color="red"), "largest")
    assert resolve(largest, [near, obj(6, "star", "red", "large", 0, 0, 45)]) == [(6,)]
    assert len(resolve(largest, [near, obj(7, "star", "red", "small", 0, 0, 22)])) == 2
    row = [obj(10 + k, "star", "red", "small", 10 + 30 * k, 50) for k in range(4)]
    three = GroupQuery("row", (Desc("star", "red"),) * 3)
    assert resolve(three, row[:3]) == [(10, 11, 12)]
    assert len(resolve(three, row)) > 1  # four in a row is not "three in a row"
    inner = obj(20, "star", "red", "small", 110, 110)
    inside = GroupQuery("inside", (Desc("star", "red"), Desc("square", "blue")))
    assert resolve(inside, [square, inner]) == [(20, 0)]


def test_split_counts_and_parsing():
    default = {"train": 0.7, "val": 0.1, "test": 0.1, "compositional": 0.1}
    assert split_counts(10, default) == {"train": 7, "val": 1, "test": 1, "compositional": 1}
    assert sum(split_counts(7, default).values()) == 7
    assert split_counts(5, parse_splits("test=1")) == {"test": 5}
    for bad in ("train=x", "dev=1", "train=-1", "train=1,train=2"):
        with pytest.raises(SynthError):
            parse_splits(bad)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_objects": 30, "max_objects": 20}, "min objects <= max objects"),
        ({"num_images": 0}, "number of images"),
        ({"size": 64}, "size must be"),
        ({"size": 160, "max_objects": 200}, "do not fit"),
        ({"queries_per_image": 0}, "queries per image"),
        ({"seed": -1}, "seed"),
        ({"splits": "val=0"}, "more than 0"),
    ],
)
def test_library_rejects_bad_settings(tmp_path, settings, message):
    arguments = {"num_images": 2, "seed": 0, **SMALL, **settings}
    with pytest.raises(SynthError, match=message) as caught:
        generate(tmp_path / "out", **arguments)
    assert isinstance(caught.value, ValueError)


def test_existing_dataset_needs_overwrite(tmp_path):
    generate(tmp_path, 1, seed=0, **SMALL)
    with pytest.raises(SynthError, match="--overwrite"):
        generate(tmp_path, 1, seed=1, **SMALL)
    generate(tmp_path, 1, seed=1, overwrite=True, **SMALL)
    assert not list(tmp_path.glob("*.partial"))


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(synth)
    return app


def test_cli_writes_the_dataset(tmp_path):
    out = tmp_path / "synth"
    result = runner.invoke(cli(), ["--out", str(out), "--num-images", "4", "--seed", "3",
                                   "--size", "192", "--min-objects", "8", "--max-objects", "12",
                                   "--splits", "train=1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "train" in result.stdout and "images/min" in result.stdout
    samples, scenes = load(out)
    assert len(scenes) == 4 and {s.split for s in samples} == {"train"}


def test_cli_is_registered_under_data():
    from sceneloc.cli import app

    result = runner.invoke(app, ["data", "synth", "--help"])
    assert result.exit_code == 0 and "--num-images" in result.stdout


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--min-objects", "40", "--max-objects", "30"], "min objects"),
        (["--num-images", "0"], "number of images"),
        (["--size", "100"], "size must be"),
        (["--splits", "train=1,holdout=1"], "bad split"),
        (["--out", "{file}/sub"], "cannot write"),
    ],
)
def test_cli_bad_options_exit_2_with_one_line(tmp_path, options, message):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    arguments = {"--out": str(tmp_path / "out"), "--num-images": "2", "--seed": "0",
                 "--size": "192", "--min-objects": "8", "--max-objects": "12"}  # fmt: skip
    for name, value in zip(options[::2], options[1::2]):
        arguments[name] = value.format(file=blocker)
    result = runner.invoke(cli(), [part for pair in arguments.items() for part in pair])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "error:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output and result.stdout == ""


def test_vocabulary_is_wide_enough():
    assert len(SHAPES) >= 5 and len(COLORS) >= 6
    assert {shape for _, shape in HELD_OUT} == set(SHAPES)
    assert len({color for color, _ in HELD_OUT}) == len(HELD_OUT)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("the small blue star", "the red cross"),
        ("the star above the medium-sized circle", "the red cross above the medium circle"),
        ("the second star from the left", "the second red cross from the left"),
        ("three blue hexagons in a row", "three red crosses in a row"),
        ("the small star inside the big square", "the red cross inside the large square"),
    ],
)
def test_with_target_asks_the_same_question_about_another_target(query, expected):
    assert render_query(with_target(parse_query(query), Desc("cross", "red"))) == expected
