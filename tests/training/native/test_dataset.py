"""Training data of the native model: mirrored queries, grouping, flips, negatives, batches."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sceneloc.data.format import Sample, read_samples
from sceneloc.data.scenes import read_scenes
from sceneloc.data.synth import (
    COLORS,
    SHAPES,
    AttributeQuery,
    GroupQuery,
    OrdinalQuery,
    QuerySpec,
    RelationQuery,
    SceneObject,
    generate,
    parse_query,
    resolve,
)
from sceneloc.errors import DataFormatError
from sceneloc.native.config import NativeConfig
from sceneloc.native.text import vocabulary_from_texts, word_tokenizer
from sceneloc.training.native.dataset import (
    Collator,
    GroundingDataset,
    group_by_image,
    mirror_query,
    object_targets,
)
from sceneloc.training.native.queries import absent_sampler_for, labeller_for

# --- mirrored queries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "mirrored"),
    [
        ("the circle left of the star", "the circle right of the star"),
        ("the square right of the red circle", "the square left of the red circle"),
        ("the leftmost star", "the rightmost star"),
        ("the rightmost blue hexagon", "the leftmost blue hexagon"),
        ("left, right, leftmost and rightmost", "right, left, rightmost and leftmost"),
        ("the second star from the left.", "the second star from the right."),
        ("the bright lefty star", "the bright lefty star"),
        ("righteous leftover brightness", "righteous leftover brightness"),
        ("the big red circle", "the big red circle"),
    ],
)
def test_mirror_query_swaps_left_and_right_words(query, mirrored):
    assert mirror_query(query) == mirrored
    assert mirror_query(mirror_query(query)) == query


def test_mirror_query_ignores_case():
    assert mirror_query("Left of the LEFTMOST star").lower() == "right of the rightmost star"
    assert mirror_query("The Rightmost circle").lower() == "the leftmost circle"


# --- grouping --------------------------------------------------------------------------------


def sample(index: int, image: str, query: str, box, image_id=None) -> Sample:
    return Sample(str(index), image, query, list(box), "train", image_id=image_id)


def test_group_by_image_keeps_first_seen_order(tmp_path):
    absolute = str(tmp_path / "elsewhere" / "c.png")
    samples = [
        sample(0, "b.png", "the red square", [1, 2, 3, 4], image_id=7),
        sample(1, "a.png", "the blue circle", [5, 6, 7, 8], image_id="a"),
        sample(2, "b.png", "the green star", [9, 10, 11, 12], image_id=7),
        sample(3, absolute, "the cross", [0, 0, 1, 1]),
        sample(4, "a.png", "the left circle", [2, 2, 4, 4], image_id="a"),
    ]
    groups = group_by_image(samples, tmp_path)
    assert [g.path for g in groups] == [tmp_path / "b.png", tmp_path / "a.png", tmp_path / absolute]
    assert [g.image_id for g in groups] == ["7", "a", None]
    assert groups[0].queries == ["the red square", "the green star"]
    assert groups[0].boxes == [[1, 2, 3, 4], [9, 10, 11, 12]]
    assert groups[1].queries == ["the blue circle", "the left circle"]
    assert groups[1].boxes == [[5, 6, 7, 8], [2, 2, 4, 4]]
    assert groups[2].queries == ["the cross"]


# --- items -----------------------------------------------------------------------------------

WIDTH, HEIGHT, SIZE = 80, 40, 32


def draw(path, color) -> None:
    """A non-square image whose left and right halves differ, so a flip shows."""
    image = Image.new("RGB", (WIDTH, HEIGHT), (90, 90, 90))
    ImageDraw.Draw(image).rectangle([10, 5, 30, 25], fill=color)
    image.save(path)


@pytest.fixture
def groups(tmp_path):
    draw(tmp_path / "one.png", (220, 40, 40))
    draw(tmp_path / "two.png", (40, 85, 225))
    samples = [
        sample(0, "one.png", "the square left of the circle", [10, 5, 30, 25]),
        sample(1, "one.png", "the rightmost star", [60, 0, 80, 40]),
        sample(2, "two.png", "the blue square", [0, 10, 40, 30]),
    ]
    return group_by_image(samples, tmp_path)


# Normalised (cx, cy, w, h) of the pixel boxes above in an 80 x 40 image, worked out by hand.
NORMALISED = {
    "the square left of the circle": [20 / 80, 15 / 40, 20 / 80, 20 / 40],
    "the rightmost star": [70 / 80, 20 / 40, 20 / 80, 40 / 40],
    "the blue square": [20 / 80, 20 / 40, 40 / 80, 20 / 40],
}


def items(dataset: GroundingDataset, epoch: int) -> list[dict]:
    dataset.set_epoch(epoch)
    return [dataset[i] for i in range(len(dataset))]


def is_flip_of(item: dict, plain: dict) -> bool:
    """Whether ``item`` is ``plain`` mirrored left-right (else it must equal ``plain``)."""
    if np.array_equal(item["pixels"], plain["pixels"]):
        assert item["queries"] == plain["queries"]
        np.testing.assert_allclose(item["boxes"], plain["boxes"])
        return False
    assert np.array_equal(item["pixels"], plain["pixels"][:, :, ::-1])
    assert item["queries"] == [mirror_query(q) for q in plain["queries"]]
    mirrored = [[1 - cx, cy, w, h] for cx, cy, w, h in plain["boxes"]]
    np.testing.assert_allclose(item["boxes"], mirrored)
    return True


def test_plain_items_have_normalised_boxes(groups):
    dataset = GroundingDataset(groups, SIZE, augment=False)
    assert len(dataset) == 2
    for epoch in range(3):
        for item in items(dataset, epoch):
            assert item["pixels"].shape == (3, SIZE, SIZE)
            assert item["pixels"].dtype == np.uint8
            assert item["present"] == [1.0] * len(item["queries"])
            for query, box in zip(item["queries"], item["boxes"]):
                assert box == pytest.approx(NORMALISED[query])


def test_flipped_items_have_mirrored_boxes_and_queries(groups):
    plain = items(GroundingDataset(groups, SIZE, augment=False), 0)
    dataset = GroundingDataset(groups, SIZE, seed=3, augment=True)
    epochs = [items(dataset, epoch) for epoch in range(16)]
    flips = [is_flip_of(item, plain[i]) for epoch in epochs for i, item in enumerate(epoch)]
    assert any(flips) and not all(flips)
    first_images = [epoch[0] for epoch in epochs]
    flipped = next(item for item in first_images if is_flip_of(item, plain[0]))
    assert flipped["queries"] == ["the square right of the circle", "the leftmost star"]
    assert flipped["boxes"][0] == pytest.approx([60 / 80, 15 / 40, 20 / 80, 20 / 40])
    assert flipped["boxes"][1] == pytest.approx([10 / 80, 20 / 40, 20 / 80, 40 / 40])


def test_items_are_fixed_by_seed_epoch_and_index(groups):
    first = GroundingDataset(groups, SIZE, seed=5)
    second = GroundingDataset(groups, SIZE, seed=5, cache_images=True)
    plain = items(GroundingDataset(groups, SIZE, augment=False), 0)
    patterns = []
    for epoch in (0, 1, 7, 3, 0):
        a, b = items(first, epoch), items(second, epoch)
        for x, y in zip(a, b):
            assert np.array_equal(x["pixels"], y["pixels"])
            assert x["queries"] == y["queries"] and x["boxes"] == y["boxes"]
        # Asked again, in another order: the same items.
        first.set_epoch(epoch)
        assert all(np.array_equal(first[i]["pixels"], a[i]["pixels"]) for i in (1, 0))
        patterns.append(tuple(is_flip_of(item, plain[i]) for i, item in enumerate(a)))
    assert patterns[0] == patterns[-1]
    # Across epochs the flips differ: over 16 epochs each image is seen both ways.
    for index in range(len(plain)):
        seen = {is_flip_of(items(first, e)[index], plain[index]) for e in range(16)}
        assert seen == {False, True}


def test_unreadable_image_is_a_data_format_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    groups = group_by_image([sample(0, "broken.png", "the star", [0, 0, 1, 1])], tmp_path)
    with pytest.raises(DataFormatError, match=re.escape(str(tmp_path / "broken.png"))):
        GroundingDataset(groups, SIZE)[0]


# --- absent queries --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, num_images=3, seed=0, size=160, min_objects=4, max_objects=8, splits="train=1")
    return out


def scene_objects(synth) -> dict[str, list[SceneObject]]:
    return {
        record["image_id"]: [SceneObject.from_dict(o) for o in record["objects"]]
        for record in map(json.loads, (synth / "scenes.jsonl").read_text().splitlines())
    }


def assert_unanswerable(query: str, objects: list[SceneObject]) -> QuerySpec:
    """The query is in the synthetic grammar and nothing in the scene answers it."""
    spec = parse_query(query)
    assert resolve(spec, objects) == [] and resolve(spec, objects, strict=True) == [], query
    return spec


def test_absent_queries_name_a_colour_and_shape_missing_from_the_image(synth):
    groups = group_by_image(read_samples(synth / "annotations.jsonl"), synth)
    assert len(groups) == 3
    objects = scene_objects(synth)
    absent = absent_sampler_for(groups, read_scenes(synth / "scenes.jsonl"))
    rng = np.random.default_rng(0)
    for group in groups:
        asked = [absent.sample(group, rng) for _ in range(30)]
        forms = {type(assert_unanswerable(q, objects[group.image_id])) for q in asked}
        assert forms == {AttributeQuery}
        assert len(set(asked)) > 1


def test_without_scenes_absent_queries_are_borrowed_from_other_images(groups):
    absent = absent_sampler_for(groups, None)
    rng = np.random.default_rng(0)
    for group in groups:
        others = {q for g in groups if g is not group for q in g.queries}
        drawn = [absent.sample(group, rng) for _ in range(20)]
        assert all(q is None or q in others for q in drawn)
        assert any(q is not None for q in drawn)


def test_dataset_adds_absent_queries_with_presence_zero(synth):
    groups = group_by_image(read_samples(synth / "annotations.jsonl"), synth)
    objects = scene_objects(synth)
    absent = absent_sampler_for(groups, read_scenes(synth / "scenes.jsonl"))
    dataset = GroundingDataset(groups, SIZE, augment=False, absent=absent, absent_fraction=1.0)
    for index, group in enumerate(groups):
        item = dataset[index]
        real = len(group.queries)
        assert item["queries"][:real] == group.queries
        assert item["present"] == [1.0] * real + [0.0] * real
        for query, box in zip(item["queries"][real:], item["boxes"][real:]):
            assert_unanswerable(query, objects[group.image_id])
            assert box == [0.5, 0.5, 1.0, 1.0]


def test_scene_annotations_give_every_object_its_attributes(synth):
    scenes = read_scenes(synth / "scenes.jsonl")
    attributes = scenes.attributes()
    assert list(attributes) == ["color", "shape", "size"]
    assert set(attributes["color"]) <= set(COLORS) and set(attributes["shape"]) <= set(SHAPES)
    for line in (synth / "scenes.jsonl").read_text().splitlines():
        record = json.loads(line)
        rows = object_targets(scenes.find(record["image_id"], synth / record["image"]), attributes)
        assert len(rows) == len(record["objects"])
        for obj, (cx, cy, w, h, color, shape, size) in zip(record["objects"], rows):
            x1, y1, x2, y2 = obj["box"]
            assert cx * record["width"] == pytest.approx((x1 + x2) / 2)
            assert cy * record["height"] == pytest.approx((y1 + y2) / 2)
            assert (w * record["width"], h * record["height"]) == pytest.approx((x2 - x1, y2 - y1))
            named = (attributes["color"][color], attributes["shape"][shape])
            assert named == (obj["color"], obj["shape"])
            assert attributes["size"][size] == obj["size"]
    assert scenes.find("not-an-image", synth / "elsewhere.png") is None


def test_flipped_items_mirror_object_boxes_too(synth):
    groups = group_by_image(read_samples(synth / "annotations.jsonl"), synth)
    scenes = read_scenes(synth / "scenes.jsonl")
    attributes = scenes.attributes()
    plain = GroundingDataset(groups, SIZE, augment=False, scenes=scenes, attributes=attributes)
    flipped_any = False
    for epoch in range(4):
        augmented = GroundingDataset(groups, SIZE, scenes=scenes, attributes=attributes)
        augmented.set_epoch(epoch)
        for index in range(len(groups)):
            original, item = plain[index], augmented[index]
            flipped = not np.array_equal(item["pixels"], original["pixels"])
            flipped_any |= flipped
            for (cx, *rest), (fx, *frest) in zip(original["objects"], item["objects"]):
                assert frest == rest
                assert fx == pytest.approx(1 - cx if flipped else cx)
    assert flipped_any


# --- batches ---------------------------------------------------------------------------------


def test_collator_maps_each_query_to_its_image():
    queries = [["the red square", "the circle left of the star", "a star"], ["the cross"]]
    boxes = [[[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]],
             [[0.5, 0.5, 1.0, 1.0]]]  # fmt: skip
    present = [[1.0, 1.0, 0.0], [1.0]]
    targets = [[[b] if p else [] for b, p in zip(bs, ps)] for bs, ps in zip(boxes, present)]
    targets[1][0] = [[0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.1, 0.1]]  # "the cross": two of them
    batch_items = [
        {"pixels": np.full((3, SIZE, SIZE), i, np.uint8), "queries": q, "boxes": b,
         "present": p, "targets": t}
        for i, (q, b, p, t) in enumerate(zip(queries, boxes, present, targets))
    ]  # fmt: skip
    flat = [q for qs in queries for q in qs]
    tokenizer = word_tokenizer(vocabulary_from_texts(flat), max_length=32)
    batch = Collator(tokenizer, NativeConfig(max_text_length=8))(batch_items)

    assert batch["pixel_values"].shape == (2, 3, SIZE, SIZE)
    assert batch["pixel_values"].dtype == torch.uint8
    assert (batch["pixel_values"][1] == 1).all()
    assert batch["image_index"].tolist() == [0, 0, 0, 1]
    assert batch["input_ids"].shape[0] == batch["attention_mask"].shape[0] == 4
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["boxes"].shape == (4, 4)
    np.testing.assert_allclose(batch["boxes"].numpy(), [b for bs in boxes for b in bs])
    assert batch["present"].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert batch["present"].is_floating_point()
    # every target, rows of -1 past a query's last (none for the absent one)
    assert batch["target_boxes"].shape == (4, 2, 4)
    np.testing.assert_allclose(batch["target_boxes"][0].numpy(), [boxes[0][0], [-1.0] * 4])
    assert (batch["target_boxes"][2] == -1).all()
    np.testing.assert_allclose(batch["target_boxes"][3].numpy(), targets[1][0])
    # Each row holds its own query's words, then padding.
    for row, mask, query in zip(batch["input_ids"], batch["attention_mask"], flat):
        ids = tokenizer(query)["input_ids"]
        assert mask.tolist() == [1] * len(ids) + [0] * (len(mask) - len(ids))
        assert row.tolist()[: len(ids)] == ids
        assert set(row.tolist()[len(ids) :]) <= {tokenizer.pad_token_id}


# --- anchors ---------------------------------------------------------------------------------


def test_items_label_what_each_query_says_of_the_scene(tmp_path):
    # Every query says which objects fit its referent's description (absent ones: none);
    # relations and pairs ("inside", "on top of") also carry the centre of the thing their
    # referent is placed relative to, fitting the anchor's description; others carry none.
    generate(tmp_path, num_images=12, seed=3, size=160, min_objects=6, max_objects=10,
             splits="train=1")  # fmt: skip
    groups = group_by_image(read_samples(tmp_path / "annotations.jsonl"), tmp_path)
    scenes = read_scenes(tmp_path / "scenes.jsonl")
    objects = scene_objects(tmp_path)
    attributes = scenes.attributes()
    absent, labeller = absent_sampler_for(groups, scenes), labeller_for(scenes)
    plain = GroundingDataset(groups, SIZE, augment=False, scenes=scenes, attributes=attributes,
                             absent=absent, absent_fraction=0.5, labeller=labeller)  # fmt: skip
    flipped_any, anchored, absent_seen = False, 0, 0
    for epoch in range(3):
        augmented = GroundingDataset(groups, SIZE, scenes=scenes, attributes=attributes,
                                     absent=absent, absent_fraction=0.5,
                                     labeller=labeller)  # fmt: skip
        augmented.set_epoch(epoch)
        for index, group in enumerate(groups):
            item, shown = plain[index], augmented[index]
            flipped = not np.array_equal(item["pixels"], shown["pixels"])
            flipped_any |= flipped
            scene = objects[group.image_id]
            for query, present, labels in zip(item["queries"], item["present"], item["labels"]):
                spec = parse_query(query)
                if isinstance(spec, AttributeQuery | OrdinalQuery):
                    described = spec.desc
                elif isinstance(spec, RelationQuery):
                    described = spec.target
                else:
                    described = spec.members[0]
                assert labels.fits == [float(described.matches(o)) for o in scene], query
                absent_seen += present == 0.0
                assert any(labels.fits) == bool(present), query
                relative = isinstance(spec, RelationQuery) or (
                    isinstance(spec, GroupQuery) and spec.arrangement in ("inside", "on top of")
                )
                if not relative or not present:
                    assert labels.anchor is None
                    continue
                anchored += 1
                anchor = spec.anchor if isinstance(spec, RelationQuery) else spec.members[1]
                centre = (labels.anchor[0] * 160, labels.anchor[1] * 160)
                there = [o for o in scene if o.center == pytest.approx(centre)]
                assert there and anchor.matches(there[0]), query
            for mine, seen in zip(item["labels"][: len(group.queries)], shown["labels"]):
                if mine.anchor is not None:
                    mirrored = [1 - mine.anchor[0], mine.anchor[1]]
                    assert seen.anchor == pytest.approx(mirrored if flipped else mine.anchor)
    assert flipped_any and anchored and absent_seen
