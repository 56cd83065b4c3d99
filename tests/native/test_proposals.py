"""Object proposals from the bundled grounder's object map find the objects of a scene."""

from __future__ import annotations

import numpy as np
import pytest
from tests.checkpoints.native import build_native

from sceneloc.backends.native import BUNDLED
from sceneloc.boxes import iou_matrix
from sceneloc.data.synth import make_scene
from sceneloc.errors import SceneLocError
from sceneloc.native.model import NativeGroundingModel
from sceneloc.native.proposals import propose


def recall(objects: np.ndarray, boxes: np.ndarray) -> float:
    """The share of objects some box covers with IoU >= 0.5."""
    return float((iou_matrix(objects, boxes).max(axis=1) >= 0.5).mean())


def uniform_grid(count: int, side: float, size: int) -> np.ndarray:
    """About ``count`` boxes of ``side`` pixels, centres on a regular grid over the image."""
    per_row = max(1, round(np.sqrt(count)))
    centres = (np.arange(per_row) + 0.5) * size / per_row
    x, y = (c.ravel() for c in np.meshgrid(centres, centres))
    return np.stack([x - side / 2, y - side / 2, x + side / 2, y + side / 2], axis=1)


def test_the_bundled_grounder_proposes_most_objects_far_better_than_a_grid():
    model = NativeGroundingModel.from_pretrained(BUNDLED).eval()
    found, grid = [], []
    for seed in range(4):
        scene = make_scene(np.random.default_rng(100 + seed))
        objects = np.asarray([o.box for o in scene.objects])
        proposals = propose(model, scene.image)
        assert proposals.scores.tolist() == sorted(proposals.scores.tolist(), reverse=True)
        assert len(proposals) <= 2 * len(objects)
        found.append(recall(objects, proposals.boxes))
        # The grid is told the objects' typical size and gets as many boxes.
        side = float(np.median([o.extent for o in scene.objects]))
        grid.append(recall(objects, uniform_grid(len(proposals), side, scene.image.width)))
    assert np.mean(found) > 0.85, found
    assert np.mean(found) > np.mean(grid) + 0.5, (found, grid)


def test_a_model_without_an_object_map_says_so(tmp_path):
    model = NativeGroundingModel.from_pretrained(build_native(tmp_path, ["a"], fusion="concat"))
    scene = make_scene(np.random.default_rng(0), size=160, min_objects=4, max_objects=6)
    with pytest.raises(SceneLocError, match="no object map"):
        propose(model, scene.image)
