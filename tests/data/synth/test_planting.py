"""Planted groups: each one is the arrangement it is listed as, in the order it is named."""

from __future__ import annotations

import numpy as np

from sceneloc.data.synth import Desc, GroupQuery, make_scene, resolve
from sceneloc.data.synth.vocab import ARRANGEMENTS


def test_planted_groups_are_what_they_claim():
    planted = set()
    for seed in range(12):
        scene = make_scene(np.random.default_rng(seed), queries_per_image=8)
        for group in scene.groups:
            members = [scene.objects[i] for i in group.members]
            spec = GroupQuery(group.arrangement, tuple(Desc(m.shape, m.color) for m in members))
            assert group.members in resolve(spec, scene.objects, strict=True), group
            planted.add(group.arrangement)
        listed = scene.record()["groups"]
        assert [(g["arrangement"], tuple(g["members"])) for g in listed] == [
            (g.arrangement, g.members) for g in scene.groups
        ]
    assert planted == set(ARRANGEMENTS)
