"""The exact check of a caption: read as a synthetic query, it must pick out its region alone."""

from __future__ import annotations

import pytest

from sceneloc.data.synth import SceneObject
from sceneloc.data.synth.checking import (
    CheckedScene,
    caption_picks_out,
    picked_out,
    region_targets,
)

# two small circles far apart, a large square with a small star inside it
RED_CIRCLE = SceneObject(0, "circle", "red", "small", (10.0, 10.0, 30.0, 30.0))
BLUE_CIRCLE = SceneObject(1, "circle", "blue", "small", (150.0, 10.0, 170.0, 30.0))
SQUARE = SceneObject(2, "square", "green", "large", (50.0, 100.0, 110.0, 160.0))
STAR = SceneObject(3, "star", "yellow", "small", (70.0, 120.0, 90.0, 140.0))
OBJECTS = [RED_CIRCLE, BLUE_CIRCLE, SQUARE, STAR]
GROUPS = [(3, 2)]  # "the star inside the square": the inner one first


def test_a_caption_picks_out_its_objects_alone():
    assert caption_picks_out("the red circle", OBJECTS, [0])
    assert caption_picks_out("The red circle.", OBJECTS, [0])  # case and full stop ignored
    assert not caption_picks_out("the red circle", OBJECTS, [1])  # true of another object
    assert not caption_picks_out("the circle", OBJECTS, [0])  # true of two
    assert not caption_picks_out("the purple circle", OBJECTS, [0])  # true of none
    assert not caption_picks_out("a red thing over there", OBJECTS, [0])  # not the grammar
    assert caption_picks_out("the star inside the square", OBJECTS, [2, 3])  # a group, any order
    assert picked_out("the leftmost circle", OBJECTS) == (0,)
    assert picked_out("the circle", OBJECTS) is None


def test_region_targets_by_box():
    assert region_targets(list(RED_CIRCLE.box), OBJECTS, GROUPS) == [(0,)]
    # the square and the pair "star inside it" share one box: both are that region
    assert region_targets(list(SQUARE.box), OBJECTS, GROUPS) == [(2,), (3, 2)]
    assert region_targets([0.0, 0.0, 5.0, 5.0], OBJECTS, GROUPS) == []


def test_exact_for_a_region():
    scene = CheckedScene(tuple(OBJECTS), tuple(GROUPS))
    square = list(SQUARE.box)
    assert scene.is_exact("the square", square)
    assert scene.is_exact("the star inside the square", square)
    assert not scene.is_exact("the star", square)  # the star alone, but another region
    with pytest.raises(ValueError, match="no object or group"):
        scene.is_exact("the square", [0.0, 0.0, 5.0, 5.0])
