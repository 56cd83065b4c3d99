"""Ordinal queries: "the second circle from the left", "the largest red shape"."""

from __future__ import annotations

from sceneloc.data.synth import Desc, OrdinalQuery, SceneObject, resolve
from sceneloc.data.synth.ordering import strict_rank


def circle(i, x, y, d=20.0):
    return SceneObject(i, "circle", "red", "small", (x, y, x + d, y + d))


def test_ranks_count_from_the_named_end():
    row = [circle(i, 10 + 40 * i, 50, d=20.0 + 10 * i) for i in range(3)]
    assert resolve(OrdinalQuery(Desc("circle"), "left", 2), row) == [(1,)]
    assert resolve(OrdinalQuery(Desc("circle"), "right", 3), row) == [(0,)]
    assert resolve(OrdinalQuery(Desc(color="red"), "smallest"), row) == [(0,)]
    assert [strict_rank(c, row, "right") for c in row] == [3, 2, 1]
    assert [strict_rank(c, row, "largest") for c in row] == [3, 2, 1]


def test_close_positions_and_sizes_are_ambiguous():
    near, far = circle(1, 60, 110), circle(2, 20, 105)
    leftmost = OrdinalQuery(Desc("circle"), "left")
    assert resolve(leftmost, [near, far]) == [(2,)]
    assert len(resolve(leftmost, [near, circle(5, 63, 10)])) == 2  # centres too close: either
    largest = OrdinalQuery(Desc(color="red"), "largest")
    assert resolve(largest, [near, circle(6, 0, 0, 45)]) == [(6,)]
    assert len(resolve(largest, [near, circle(7, 0, 0, 22)])) == 2  # within the size tolerance
