"""``LocateResult.targets`` from the API: what the query asks for among a detector's ranked
candidates, and what the native model's referent head names itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sceneloc
from checkpoints.native import tiny_native
from sceneloc.boxes import nms


@pytest.fixture(scope="module")
def grounder(grounding_dino_dir):
    return sceneloc.load(str(grounding_dino_dir), device="cpu")


def test_a_detector_gives_as_many_targets_as_the_query_asks(grounder, scene):
    every, two, one = grounder.locate(
        scene, ["all the red circles", "the two squares", "the red circle"], threshold=0.0
    )
    assert len(every.targets) > 2  # every distinct candidate, not only the top_k ranked
    distinct = nms(every.targets.boxes, every.targets.scores, 0.5)
    assert len(distinct) == len(every.targets)
    assert len(two.targets) == 2 and np.array_equal(two.targets.boxes[0], two.box)
    assert len(one.targets) == 1 and np.array_equal(one.targets.boxes[0], one.box)
    (nothing,) = grounder.locate(scene, "all the red circles", threshold=1.1)
    assert len(nothing.targets) == 0 and nothing.box is None


def test_the_native_models_own_targets(tmp_path, scene):
    model, tokenizer = tiny_native(["the red star"], referent_head=True)
    with torch.no_grad():
        model.referent_head.bias.fill_(1e4)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    grounder = sceneloc.load(str(tmp_path), device="cpu")
    (result,) = grounder.locate(scene, "the red star", threshold=0.0, top_k=1)
    assert len(result.candidates) == 1 and len(result.targets) > 1  # top_k caps candidates
    assert np.array_equal(result.targets.boxes[0], result.box)
    (absent,) = grounder.locate(scene, "the red star", threshold=1.1)
    assert len(absent.targets) == 0
