"""Writing a synthetic dataset: reproducible files, dense scenes, one referent per query."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from sceneloc.boxes import union_box
from sceneloc.data import read_samples
from sceneloc.data.synth import (
    HELD_OUT,
    QUERY_TYPES,
    SceneObject,
    SynthError,
    generate,
    parse_query,
    parse_splits,
    render_query,
    resolve,
    spec_from_dict,
    split_counts,
    target_ids,
)

SMALL = {"size": 192, "min_objects": 8, "max_objects": 14, "queries_per_image": 6}
SPLITS = "train=0.5,val=0.1,test=0.1,compositional=0.3"


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
    files = ("annotations.jsonl", "scenes.jsonl", "descriptions.jsonl")
    for name in (*files, *(f"images/{i:06d}.png" for i in range(3))):
        assert (paths[0] / name).read_bytes() == (same / name).read_bytes(), name
        assert (paths[0] / name).read_bytes() != (other / name).read_bytes(), name


def test_object_counts_within_range(dataset):
    _, stats, _, scenes = dataset
    counts = [len(scene["objects"]) for scene in scenes.values()]
    assert all(8 <= n <= 14 for n in counts)
    assert stats.objects == sum(counts)


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


def test_every_description_picks_out_its_target_alone(dataset):
    out, stats, samples, scenes = dataset
    references = list(read_samples(out / "descriptions.jsonl"))
    assert len(references) > 3 * len(samples) and stats.descriptions == len(references)
    queries = {q["id"]: q for scene in scenes.values() for q in scene["queries"]}
    by_query = {s.id: s for s in samples}
    for reference in references:
        asked = by_query[reference.id.rsplit("_", 1)[0]]  # the annotation it describes
        assert (reference.image, reference.box, reference.split) == (
            asked.image, asked.box, asked.split,
        )  # fmt: skip
        assert reference.category == asked.category and reference.image_id == asked.image_id
        objects = objects_of(scenes[reference.image])
        spec = parse_query(reference.query)  # resolved from the text itself
        assert spec.type == reference.type and render_query(spec) == reference.query
        matches = resolve(spec, objects)
        assert len(matches) == 1, (reference.query, matches)
        assert matches[0] in resolve(spec, objects, strict=True), reference.query
        assert list(target_ids(spec, matches[0])) == queries[asked.id]["target"], reference.query
        if reference.split != "compositional":  # held-out pairs are never named outside it
            assert not {objects[i].pair for i in matches[0]} & HELD_OUT, reference.query


def test_each_annotation_is_among_its_targets_descriptions(dataset):
    out, _, samples, _ = dataset
    references: dict[str, list[str]] = {}
    for reference in read_samples(out / "descriptions.jsonl"):
        references.setdefault(reference.id.rsplit("_", 1)[0], []).append(reference.query)
    for sample in samples:
        told = references[sample.id]
        assert render_query(parse_query(sample.query)) in told, sample.query
        assert len(set(told)) == len(told)  # each description once
    kinds = {r.type for r in read_samples(out / "descriptions.jsonl")}
    assert kinds == set(QUERY_TYPES)
