"""The generator's random draws: a choice, a shuffle, a colour-shape pair, a diameter.

Every draw goes through the scene's one generator, in a fixed order, so a seed fixes a scene.
Which pairs a split may name lives here too: the layout draws by it and the queries obey it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from sceneloc.data.synth.options import MIN_PIXELS
from sceneloc.data.synth.vocab import COLORS, HELD_OUT, SHAPES, SIZE_RANGES

T = TypeVar("T")

COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = tuple(sorted(HELD_OUT))  # sets iterate randomly


def choice(rng: np.random.Generator, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


def shuffled(rng: np.random.Generator, items: Sequence[T]) -> list[T]:
    return [items[i] for i in rng.permutation(len(items))]


def target_ok(pair: tuple[str, str], split: str) -> bool:
    """A referent's colour-shape pair: held out exactly when the split is compositional."""
    return (pair in HELD_OUT) == (split == "compositional")


def named_ok(pair: tuple[str, str], split: str) -> bool:
    """Any other named object (an anchor, a container): never a held-out pair outside
    the compositional split, so train queries never mention one at all."""
    return split == "compositional" or pair not in HELD_OUT


def draw_pair(rng: np.random.Generator, split: str, role: str = "any") -> tuple[str, str]:
    """A colour-shape pair for a ``target``, another ``named`` object or ``any`` object."""
    if role == "target" and split == "compositional":
        return choice(rng, HELD_OUT_PAIRS)
    if role == "any" and split == "compositional" and rng.random() < 0.3:
        return choice(rng, HELD_OUT_PAIRS)  # enough held-out pairs to ask about
    while True:
        pair = choice(rng, COLOR_NAMES), choice(rng, SHAPES)
        if role == "any" or (role == "target" and target_ok(pair, split)):
            return pair
        if role == "named" and named_ok(pair, split):
            return pair


def draw_diameter(rng: np.random.Generator, size: str, side: int, scale: float) -> int:
    """A diameter in pixels for a ``size`` class on a ``side``-pixel image, crowd-scaled."""
    low, high = SIZE_RANGES[size]
    return max(MIN_PIXELS, round(rng.uniform(low, high) * side * scale))
