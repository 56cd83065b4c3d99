"""The vocabulary leaves every shape and colour seen in training, only not held-out pairs."""

from __future__ import annotations

from sceneloc.data.synth import COLORS, HELD_OUT, SHAPES


def test_vocabulary_is_wide_enough():
    assert len(SHAPES) >= 5 and len(COLORS) >= 6
    assert {shape for _, shape in HELD_OUT} == set(SHAPES)
    assert len({color for color, _ in HELD_OUT}) == len(HELD_OUT)
