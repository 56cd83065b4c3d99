"""The native model learns: a short CPU run on synthetic scenes beats "right shape, random pick".

Trained from scratch on small synthetic scenes, it is scored after every epoch on scenes
drawn with another seed (the same code as ``sceneloc evaluate``). The bar is the chance
baseline that already knows the referent's shape, measured on the same test queries.
"""

from __future__ import annotations

import pytest

from sceneloc.data.synth import generate
from sceneloc.evaluation import evaluate_baseline
from sceneloc.training import train
from sceneloc.training.native import NativeOptions

SCENES = {"size": 256, "min_objects": 12, "max_objects": 20, "queries_per_image": 10}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    generate(root / "train", num_images=300, seed=1, splits="train=1", **SCENES)
    generate(root / "test", num_images=40, seed=2, splits="test=1", **SCENES)
    return root


def test_accuracy_climbs_well_above_the_same_shape_baseline(scenes, tmp_path):
    test = scenes / "test" / "annotations.jsonl"
    options = NativeOptions.build(
        "synthetic-cpu", data=str(scenes / "train" / "annotations.jsonl"), val=str(test),
        out=str(tmp_path / "run"), epochs=6,
    )  # fmt: skip
    curve = [record.validation["val_acc"] for record in train(options)]
    baseline = evaluate_baseline(test, "same-shape").to_dict()["acc@0.5"]
    assert curve[-1] > curve[0] + 0.15, curve
    assert max(curve) > baseline + 0.05, (curve, baseline)
