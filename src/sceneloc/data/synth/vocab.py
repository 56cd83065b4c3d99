"""The closed vocabulary of the synthetic scenes: shapes, colours, sizes and held-out pairs.

Everything that names an attribute reads it from here, so the renderer, the query
templates, the parser and the resolver can never disagree about a word.
"""

from __future__ import annotations

#: Shapes, each drawn so that its larger side (its *extent*) is the object's diameter.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross")
PLURALS: dict[str, str] = {
    shape: shape + ("es" if shape.endswith("s") else "s") for shape in SHAPES
}

#: Saturated, well-separated colours; backgrounds are low-saturation greys so none blends in.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 25),
    "yellow": (240, 215, 35),
    "green": (40, 165, 65),
    "cyan": (40, 200, 215),
    "blue": (40, 85, 225),
    "purple": (145, 65, 205),
    "pink": (245, 115, 195),
}

#: Size classes: extent as a fraction of the image side (before crowding shrinks them all).
#: Neighbouring classes differ by more than :data:`~sceneloc.data.synth.ordering.SIZE_TOLERANCE`,
#: so "the largest" never hesitates between two classes.
SIZES: tuple[str, ...] = ("small", "medium", "large")
SIZE_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.045, 0.055),
    "medium": (0.07, 0.08),
    "large": (0.105, 0.12),
}
#: Words a query may use for a size; the first is the canonical one.
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "medium": ("medium", "medium-sized"),
    "large": ("large", "big"),
}

#: Colour-shape pairs never referred to in train/val/test; the compositional split targets only
#: these. One pair per shape and a different colour for each (cyan keeps all its shapes), so every
#: shape and colour is still seen as a target in training, only not in these combinations.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "star"),
        ("orange", "hexagon"),
        ("yellow", "circle"),
        ("green", "triangle"),
        ("blue", "cross"),
        ("purple", "square"),
        ("pink", "diamond"),
    }
)

SPLITS: tuple[str, ...] = ("train", "val", "test", "compositional")
#: The query types a dataset asks by default: one referent each.
QUERY_TYPES: tuple[str, ...] = ("attribute", "relation", "ordinal", "group")
#: Opt-in types: several referents ("all the red stars") and none (a description of nothing
#: in the scene); asked only when named, so default datasets stay as they were.
ALL_QUERY_TYPES: tuple[str, ...] = (*QUERY_TYPES, "multiple", "absent")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
ORDERS: tuple[str, ...] = ("left", "right", "top", "bottom", "largest", "smallest")
ARRANGEMENTS: tuple[str, ...] = ("inside", "on top of", "row", "column")
#: Shapes with room for a smaller shape inside them.
CONTAINERS: tuple[str, ...] = ("circle", "square", "hexagon")

NUMBERS: dict[int, str] = {2: "two", 3: "three", 4: "four"}
#: The sides a multiple query counts from ("the two circles on the left"), and their words.
SIDES: dict[str, str] = {
    "left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
}  # fmt: skip
#: The most referents of one multiple query ("all the red stars").
MAX_REFERENTS = 6
ORDINALS: dict[int, str] = {1: "first", 2: "second", 3: "third", 4: "fourth"}
EXTREMES: dict[str, tuple[str, ...]] = {
    "left": ("leftmost",),
    "right": ("rightmost",),
    "top": ("topmost",),
    "bottom": ("bottommost", "lowest"),
    "largest": ("largest", "biggest"),
    "smallest": ("smallest",),
}
