"""Strategies chosen by the data: the synthetic grammar's for its scenes, and any other scene
file (a converted dataset listing all objects) trains the same way, with its own or none."""

from __future__ import annotations

import json
import math

import numpy as np
from PIL import Image, ImageDraw

import sceneloc
from sceneloc.data import read_samples, read_scenes
from sceneloc.data.synth import generate, make_domain
from sceneloc.training import train
from sceneloc.training.native import NativeOptions
from sceneloc.training.native.dataset import GroundingDataset, QueryLabels, group_by_image
from sceneloc.training.native.queries import (
    BorrowedQueries,
    MissingPairs,
    SyntheticLabeller,
    absent_sampler_for,
    calibration_sampler,
    labeller_for,
    present_and_absent,
)

#: Objects of the converted photos: (category, box) in a 96 x 64 image.
OBJECTS = [("dog", [8, 20, 40, 56]), ("person", [56, 4, 88, 60])]


def converted_dataset(folder):
    """Two "photos" with a scene file of another origin: categories, no ids, no grammar."""
    samples, scenes = [], []
    for index in range(2):
        image = Image.new("RGB", (96, 64), (120, 120, 120))
        draw = ImageDraw.Draw(image)
        for (_category, box), color in zip(OBJECTS, ((200, 150, 60), (40, 80, 200))):
            draw.rectangle(box, fill=color)
        image.save(folder / f"photo{index}.jpg")
        for number, (category, box) in enumerate(OBJECTS):
            samples.append({"id": f"{index}-{number}", "image": f"photo{index}.jpg",
                            "query": f"the {category} in photo {index}", "box": box,
                            "split": "train"})  # fmt: skip
        scenes.append({"image": f"photo{index}.jpg", "width": 96, "height": 64,
                       "objects": [{"box": box, "category": c} for c, box in OBJECTS]})  # fmt: skip
    (folder / "train.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (folder / "scenes.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scenes))
    return folder / "train.jsonl"


def test_synthetic_scenes_get_the_grammars_strategies(tmp_path):
    generate(tmp_path, num_images=2, seed=0, size=160, min_objects=4, max_objects=8,
             splits="train=1")  # fmt: skip
    scenes = read_scenes(tmp_path / "scenes.jsonl")
    groups = group_by_image(read_samples(tmp_path / "annotations.jsonl"), tmp_path)
    assert isinstance(labeller_for(scenes), SyntheticLabeller)
    assert isinstance(absent_sampler_for(groups, scenes), MissingPairs)
    assert labeller_for(None) is None
    assert isinstance(absent_sampler_for(groups, None), BorrowedQueries)


def test_calibration_uses_the_datas_own_no_target_queries_when_it_has_them(tmp_path):
    """Scenes with ``absent`` queries calibrate on exactly those; without any, absent ones
    are made, one per present query."""
    rng = np.random.default_rng(0)
    for folder, types in [("own", "attribute,absent"), ("made", "attribute")]:
        generate(tmp_path / folder, num_images=3, seed=5, size=160, min_objects=6,
                 max_objects=10, splits="val=1", domain=make_domain(query_types=types))  # fmt: skip
        scenes = read_scenes(tmp_path / folder / "scenes.jsonl")
        groups = group_by_image(read_samples(tmp_path / folder / "annotations.jsonl"),
                                tmp_path / folder)  # fmt: skip
        sampler = calibration_sampler(groups, scenes)
        assert (sampler is None) == (folder == "own")
        for group in groups:
            present, absent = present_and_absent(group, sampler, rng)
            own = [q for q, box in zip(group.queries, group.boxes) if box is None]
            assert [q for q, _ in present] == [
                q for q, box in zip(group.queries, group.boxes) if box is not None
            ]
            if folder == "own":
                assert absent == own
            else:
                assert not own and len(absent) == len(present)
                assert not set(absent) & set(group.queries)
    assert isinstance(sampler, MissingPairs)


def test_missing_pairs_name_only_the_datas_own_colours_and_shapes(tmp_path):
    """On a domain of a few colours and shapes, made absent queries use those words only
    (a model fine-tuned there never read the others) and name a pair the image lacks."""
    domain = make_domain(colors="red,blue,green", shapes="circle,square")
    generate(tmp_path, num_images=4, seed=3, size=160, min_objects=4, max_objects=4,
             splits="train=1", domain=domain)  # fmt: skip
    scenes = read_scenes(tmp_path / "scenes.jsonl")
    groups = group_by_image(read_samples(tmp_path / "annotations.jsonl"), tmp_path)
    sampler = absent_sampler_for(groups, scenes)
    rng = np.random.default_rng(0)
    for group in groups:
        scene = scenes.find(group.image_id, group.path)
        present = {f"the {o.attributes['color']} {o.attributes['shape']}" for o in scene.objects}
        drawn = {sampler.sample(group, rng) for _ in range(20)} - {None}
        assert drawn and not drawn & present
        assert {q.split()[1] for q in drawn} <= {"red", "blue", "green"}
        assert {q.split()[2] for q in drawn} <= {"circle", "square"}


def test_other_scenes_get_no_labeller_and_borrowed_absent_queries(tmp_path):
    data = converted_dataset(tmp_path)
    scenes = read_scenes(tmp_path / "scenes.jsonl")
    groups = group_by_image(read_samples(data), tmp_path)
    assert labeller_for(scenes) is None
    sampler = absent_sampler_for(groups, scenes)
    assert isinstance(sampler, BorrowedQueries)
    rng = np.random.default_rng(0)
    drawn = {sampler.sample(groups[0], rng) for _ in range(20)} - {None}
    assert drawn and drawn <= set(groups[1].queries)


def test_a_converted_scene_file_trains_attribute_heads_and_saves_a_working_model(tmp_path):
    data = converted_dataset(tmp_path)
    options = NativeOptions.build(
        data=str(data), out=str(tmp_path / "run"), epochs=2, image_size=64, hidden_size=16,
        fusion_layers=1, image_layers=1, attention_heads=2, batch_size=2, absent_fraction=0.5,
    )  # fmt: skip
    records = train(options)
    assert [r.epoch for r in records] == [1, 2]
    assert all(math.isfinite(r.train_loss) for r in records)
    saved = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert saved["object_attributes"] == {"category": ["dog", "person"]}
    grounder = sceneloc.load(str(tmp_path / "run" / "best"), device="cpu")
    (found,) = grounder.locate(tmp_path / "photo0.jpg", "the dog in photo 0", threshold=0.0)
    assert found.box is not None


def test_the_dataset_asks_a_labeller_of_ones_own(tmp_path):
    """A user's labeller sees each query with its image's scene; items carry its answer."""
    data = converted_dataset(tmp_path)
    scenes = read_scenes(tmp_path / "scenes.jsonl")
    groups = group_by_image(read_samples(data), tmp_path)
    asked = []

    def category_labeller(scene, query):
        asked.append((scene.image, query))
        return QueryLabels([float(o.attributes["category"] in query) for o in scene.objects])

    dataset = GroundingDataset(
        groups, 32, augment=False, scenes=scenes, attributes=scenes.attributes(),
        labeller=category_labeller,
    )  # fmt: skip
    item = dataset[0]
    assert [labels.fits for labels in item["labels"]] == [[1.0, 0.0], [0.0, 1.0]]
    assert asked == [("photo0.jpg", "the dog in photo 0"), ("photo0.jpg", "the person in photo 0")]
