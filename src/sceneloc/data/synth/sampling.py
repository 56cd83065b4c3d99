"""The generator's random draws: a choice, a shuffle, a colour-shape pair, a diameter.

Every draw goes through the scene's one generator, in a fixed order, so a seed fixes a scene.
Which pairs a split may name lives here too: the layout draws by it and the queries obey it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from sceneloc.data.synth.domain import DEFAULT_DOMAIN, Domain
from sceneloc.data.synth.options import MIN_PIXELS
from sceneloc.data.synth.vocab import COLORS, HELD_OUT, SIZE_RANGES

T = TypeVar("T")

COLOR_NAMES: tuple[str, ...] = tuple(COLORS)


def choice(rng: np.random.Generator, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


def shuffled(rng: np.random.Generator, items: Sequence[T]) -> list[T]:
    return [items[i] for i in rng.permutation(len(items))]


def target_ok(pair: tuple[str, str], split: str) -> bool:
    """A referent's colour-shape pair: held out exactly when the split is compositional.

    (A domain's held-out pairs are :data:`HELD_OUT`'s within it, so membership of the whole
    set decides for every pair a domain draws.)"""
    return (pair in HELD_OUT) == (split == "compositional")


def named_ok(pair: tuple[str, str], split: str) -> bool:
    """Any other named object (an anchor, a container): never a held-out pair outside
    the compositional split, so train queries never mention one at all."""
    return split == "compositional" or pair not in HELD_OUT


def draw_pair(
    rng: np.random.Generator, split: str, role: str = "any", domain: Domain = DEFAULT_DOMAIN
) -> tuple[str, str]:
    """A colour-shape pair of ``domain`` for a ``target``, another ``named`` object or ``any``."""
    held_out = domain.held_out
    if role == "target" and split == "compositional":
        return choice(rng, held_out)
    if role == "any" and split == "compositional" and rng.random() < 0.3:
        return choice(rng, held_out)  # enough held-out pairs to ask about
    while True:
        pair = choice(rng, domain.colors), choice(rng, domain.shapes)
        if role == "any" or (role == "target" and target_ok(pair, split)):
            return pair
        if role == "named" and named_ok(pair, split):
            return pair


def draw_diameter(rng: np.random.Generator, size: str, side: int, scale: float) -> int:
    """A diameter in pixels for a ``size`` class on a ``side``-pixel image, crowd-scaled."""
    low, high = SIZE_RANGES[size]
    return max(MIN_PIXELS, round(rng.uniform(low, high) * side * scale))
