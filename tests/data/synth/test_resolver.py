"""Resolving relations and groups: an ambiguous query has several readings, not one."""

from __future__ import annotations

from sceneloc.data.synth import Desc, GroupQuery, RelationQuery, SceneObject, resolve


def obj(i, shape, color, size, x, y, d=20.0):
    return SceneObject(i, shape, color, size, (x, y, x + d, y + d))


def test_relation_needs_one_target_and_one_anchor():
    square = obj(0, "square", "blue", "large", 100, 100, 40)
    near, far = obj(1, "circle", "red", "small", 60, 110), obj(2, "circle", "red", "small", 20, 105)
    left = RelationQuery(Desc("circle"), "left of", Desc("square", "blue"))
    assert resolve(left, [square, near, obj(3, "circle", "red", "small", 300, 300)]) == [(1, 0)]
    assert len(resolve(left, [square, near, far])) == 2  # two circles to its left
    second = obj(4, "square", "blue", "large", 200, 300, 40)
    assert len(resolve(left, [square, second, near])) >= 2  # which blue square?


def test_groups_resolve_to_their_members_in_order():
    row = [obj(10 + k, "star", "red", "small", 10 + 30 * k, 50) for k in range(4)]
    three = GroupQuery("row", (Desc("star", "red"),) * 3)
    assert resolve(three, row[:3]) == [(10, 11, 12)]
    assert resolve(three, row[2::-1]) == [(10, 11, 12)]  # left to right, whatever the listing
    assert len(resolve(three, row)) > 1  # four in a row is not "three in a row"
    square = obj(0, "square", "blue", "large", 100, 100, 40)
    inner = obj(20, "star", "red", "small", 110, 110)
    inside = GroupQuery("inside", (Desc("star", "red"), Desc("square", "blue")))
    assert resolve(inside, [square, inner]) == [(20, 0)]
