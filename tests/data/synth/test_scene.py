"""One scene in memory: deterministic, dense, each shape drawn exactly in its box."""

from __future__ import annotations

import numpy as np

from sceneloc.data.synth import COLORS, make_scene

SMALL = {"size": 192, "min_objects": 8, "max_objects": 14, "queries_per_image": 6}


def test_make_scene_in_memory_is_deterministic():
    one, two = (make_scene(np.random.default_rng(11), **SMALL) for _ in range(2))
    assert np.array_equal(np.asarray(one.image), np.asarray(two.image))
    assert one.samples == two.samples and one.objects == two.objects
    assert one.image.size == (192, 192) and one.samples[0].image == "images/000000.png"


def test_default_scenes_are_dense():
    dense = make_scene(np.random.default_rng(3))  # the defaults: 20 to 60 on 512 px
    assert 20 <= len(dense.objects) <= 60 and dense.image.size == (512, 512)


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
