"""The generator's limits, checked before any drawing, and its one error type."""

from __future__ import annotations

import math

from sceneloc.data.synth.vocab import SIZE_RANGES
from sceneloc.errors import SceneLocError

#: Above this many objects all shapes shrink by sqrt(CROWD / n), keeping the fill similar.
CROWD = 60
#: Smallest allowed extent, in pixels, of a small shape.
MIN_PIXELS = 7
MIN_SIZE, MAX_SIZE = 160, 4096
MIN_OBJECTS, MAX_OBJECTS = 4, 5000
MAX_QUERIES = 20


class SynthError(SceneLocError, ValueError):
    """Bad generator settings (an impossible range, too small an image) or an unwritable output."""


def crowd_scale(num_objects: int, room: float = 1.0) -> float:
    """The factor every shape's diameter is multiplied by in a scene of ``num_objects``;
    ``room``: how many scenes of the object size base the image holds (``(size / base)**2``),
    so that a huge scene of small-scene objects is only crowded as its density asks."""
    return min(1.0, math.sqrt(CROWD * room / num_objects))


def check_options(
    size: int,
    min_objects: int,
    max_objects: int,
    queries_per_image: int,
    size_base: int | None = None,
) -> None:
    """Raise :class:`SynthError` with a one-line reason for settings that cannot work
    (``size_base``: the side whose pixel sizes shapes are drawn at, default ``size``)."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise SynthError(f"size must be {MIN_SIZE} to {MAX_SIZE} pixels, got {size}")
    if not MIN_OBJECTS <= min_objects <= max_objects <= MAX_OBJECTS:
        raise SynthError(
            f"need {MIN_OBJECTS} <= min objects <= max objects <= {MAX_OBJECTS}, "
            f"got min {min_objects} and max {max_objects}"
        )
    base = size_base or size
    smallest = SIZE_RANGES["small"][0] * base * crowd_scale(max_objects, (size / base) ** 2)
    if smallest < MIN_PIXELS:
        raise SynthError(
            f"{max_objects} objects do not fit a {size} px image (small shapes would be "
            f"{smallest:.1f} px); use a larger size (or object size base) or fewer objects"
        )
    if not 1 <= queries_per_image <= MAX_QUERIES:
        raise SynthError(f"queries per image must be 1 to {MAX_QUERIES}, got {queries_per_image}")
