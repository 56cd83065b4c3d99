"""The describer learns: a short CPU run on synthetic scenes says what picks regions out.

Trained on small synthetic scenes, its captions of the test regions (scenes of another seed)
are checked by the synthetic resolver after every epoch (``exact``). The bar is a describer
that names each target's colour and shape only ("the red star"), true of the target but not
always of it alone, scored on the same regions by the same check. To stay short, the image
side starts from the bundled grounder's (which already tells colours and shapes apart): what
is learnt here is saying which words single a region out. Learning from scratch takes longer
(the README's training benchmark).
"""

from __future__ import annotations

import pytest

from sceneloc.data.format import read_samples
from sceneloc.data.scenes import read_scenes
from sceneloc.data.synth import generate
from sceneloc.data.synth.checking import CheckedScene, region_targets
from sceneloc.evaluation.describing import read_regions
from sceneloc.training import train
from sceneloc.training.describe import DescribeOptions

SCENES = {"size": 256, "min_objects": 20, "max_objects": 30, "queries_per_image": 8}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("describe-learning")
    generate(root / "train", num_images=200, seed=1, splits="train=1", **SCENES)
    generate(root / "test", num_images=30, seed=2, splits="test=1", **SCENES)
    return root


def colour_and_shape_exact(data) -> float:
    """``exact`` of "the <colour> <shape>" of each region's (first) object."""
    scenes = read_scenes(data.parent / "scenes.jsonl")
    picked = []
    for region in read_regions(read_samples(data)):
        scene = CheckedScene.from_record(scenes.find(region.image_id, data.parent / region.image))
        first = scene.objects[region_targets(region.box, scene.objects, scene.groups)[0][0]]
        picked.append(scene.is_exact(f"the {first.color} {first.shape}", region.box))
    return sum(picked) / len(picked)


def test_exact_climbs_well_above_naming_colour_and_shape(scenes, tmp_path):
    test = scenes / "test" / "annotations.jsonl"
    options = DescribeOptions.build(
        "synthetic-cpu", data=str(scenes / "train" / "annotations.jsonl"), val=str(test),
        out=str(tmp_path / "run"), epochs=10, image_encoder_from="native-synth",
    )  # fmt: skip
    curve = [record.validation["val_exact"] for record in train(options)]
    baseline = colour_and_shape_exact(test)
    assert max(curve) > baseline + 0.15, (curve, baseline)
    assert curve[-1] > curve[0], curve
