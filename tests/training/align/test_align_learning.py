"""The alignment model learns: after a short CPU run on synthetic scenes, it picks the region
an attribute query describes among the bundled grounder's proposals far above chance.

Trained through ``sceneloc train --task align`` and scored after every epoch on scenes drawn
with another seed, by the code of ``sceneloc evaluate``. Chance is measured on the same
queries: the share of each query's proposals that are its target.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sceneloc.backends.native import BUNDLED
from sceneloc.boxes import iou_matrix
from sceneloc.cli import app
from sceneloc.data.format import read_samples
from sceneloc.data.synth import generate
from sceneloc.images import load_image
from sceneloc.native.model import NativeGroundingModel
from sceneloc.native.proposals import propose

SCENES = {"size": 256, "min_objects": 12, "max_objects": 20, "queries_per_image": 10}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("align-learning")
    generate(root / "train", num_images=120, seed=1, splits="train=1", **SCENES)
    generate(root / "test", num_images=30, seed=2, splits="test=1", **SCENES)
    lines = (root / "test" / "annotations.jsonl").read_text().splitlines()
    attribute = [line for line in lines if json.loads(line)["type"] == "attribute"]
    (root / "test" / "attribute.jsonl").write_text("\n".join(attribute) + "\n")
    return root


def chance_among_proposals(data) -> float:
    """The expected accuracy of a random pick among each query's proposals."""
    proposer = NativeGroundingModel.from_pretrained(BUNDLED).eval()
    shares = []
    for sample in read_samples(data):
        image = load_image(sample.image_path(data.parent)).image
        proposals = propose(proposer, image)
        shares.append(float((iou_matrix(proposals.boxes, [sample.box]) >= 0.5).mean()))
    return float(np.mean(shares))


def test_attribute_accuracy_climbs_far_above_chance_among_the_proposals(scenes, tmp_path):
    test = scenes / "test" / "attribute.jsonl"
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--task", "align", "--preset", "synthetic-cpu", "--epochs", "3",
        "--data", str(scenes / "train" / "annotations.jsonl"), "--val", str(test),
        "--out", str(run),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    curve = [float(line.split(",")[header.index("val_acc")]) for line in lines[1:]]
    chance = chance_among_proposals(test)
    assert curve[-1] > curve[0], curve
    assert max(curve) > max(0.3, 5 * chance), (curve, chance)
