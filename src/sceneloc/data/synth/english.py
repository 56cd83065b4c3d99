"""Specs as English and back: the generator's wording and the parser that reads every variant.

The vocabulary (:mod:`~sceneloc.data.synth.vocab`) lists each word once, so what
:func:`render_query` can say is exactly what :func:`parse_query` can read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from sceneloc.data.synth.specs import (
    AbsentQuery,
    AttributeQuery,
    Desc,
    GroupQuery,
    MultipleQuery,
    OrdinalQuery,
    QuerySpec,
    RelationQuery,
)
from sceneloc.data.synth.vocab import (
    COLORS,
    EXTREMES,
    NUMBERS,
    ORDINALS,
    PLURALS,
    SHAPES,
    SIDES,
    SIZE_WORDS,
)

RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above",),
    "below": ("below",),
}


def pick(options: Sequence[str], rng: np.random.Generator | None) -> str:
    """The canonical word without a generator, else a random synonym (varied phrasing)."""
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def desc_text(desc: Desc, rng: np.random.Generator | None = None, plural: bool = False) -> str:
    """``"[size] [colour] shape"``, the word "shape" standing in for an unsaid shape
    (``plural``: "shapes", "red stars")."""
    words = []
    if desc.size is not None:
        words.append(pick(SIZE_WORDS[desc.size], rng))
    if desc.color is not None:
        words.append(desc.color)
    shape = desc.shape or "shape"
    words.append((PLURALS[shape] if desc.shape else "shapes") if plural else shape)
    return " ".join(words)


def render_query(spec: QuerySpec, rng: np.random.Generator | None = None) -> str:
    """The query in English; ``rng`` varies synonyms ("big"/"large"), :func:`parse_query`
    reads every variant back. An absent query is worded as the query it wraps."""
    if isinstance(spec, AbsentQuery):
        return render_query(spec.spec, rng)
    if isinstance(spec, MultipleQuery):
        if spec.count is None:
            return f"all the {desc_text(spec.desc, rng, plural=True)}"
        side = f" {SIDES[spec.side]}" if spec.side else ""
        return f"the {NUMBERS[spec.count]} {desc_text(spec.desc, rng, plural=True)}{side}"
    if isinstance(spec, AttributeQuery):
        return f"the {desc_text(spec.desc, rng)}"
    if isinstance(spec, RelationQuery):
        relation = pick(RELATION_WORDS[spec.relation], rng)
        return f"the {desc_text(spec.target, rng)} {relation} the {desc_text(spec.anchor, rng)}"
    if isinstance(spec, OrdinalQuery):
        if spec.rank == 1 or spec.order in ("largest", "smallest"):
            return f"the {pick(EXTREMES[spec.order], rng)} {desc_text(spec.desc, rng)}"
        return f"the {ORDINALS[spec.rank]} {desc_text(spec.desc, rng)} from the {spec.order}"
    if spec.arrangement in ("row", "column"):
        first = spec.members[0]
        shape = PLURALS[first.shape] if first.shape else "shapes"
        return f"{NUMBERS[len(spec.members)]} {first.color} {shape} in a {spec.arrangement}"
    first, second = (desc_text(m, rng) for m in spec.members)
    return f"the {first} {spec.arrangement} the {second}"


_SIZE_OF_WORD = {word: size for size, words in SIZE_WORDS.items() for word in words}
_SHAPE_OF_PLURAL = {plural: shape for shape, plural in PLURALS.items()}
_NUMBER_OF_WORD = {word: n for n, word in NUMBERS.items()}
_RANK_OF_WORD = {word: n for n, word in ORDINALS.items()}
_ORDER_OF_WORD = {word: order for order, words in EXTREMES.items() for word in words}
_ROW = re.compile(rf"({'|'.join(NUMBERS.values())}) (\S+) (\S+) in a (row|column)")
_PAIR = re.compile(r"the (.+) (inside|on top of) the (.+)")
_RELATION = re.compile(r"the (.+?) (?:to the )?(left of|right of|above|below) the (.+)")
_NTH = re.compile(rf"the ({'|'.join(ORDINALS.values())}) (.+) from the (left|right|top|bottom)")
_EXTREME = re.compile(rf"the ({'|'.join(_ORDER_OF_WORD)}) (.+)")
_ATTRIBUTE = re.compile(r"the (.+)")
_ALL = re.compile(r"all the (.+)")
_SIDE_OF_WORDS = {words: side for side, words in SIDES.items()}
_COUNTED = re.compile(
    rf"the ({'|'.join(NUMBERS.values())}) (.+?)(?: ({'|'.join(_SIDE_OF_WORDS)}))?"
)


def parse_desc(text: str, plural: bool = False) -> Desc:
    """``"[size] [colour] shape"``; the shape may be the word "shape" after a size or colour
    (``plural``: "[size] [colour] shapes")."""
    words = text.split()
    if plural:
        if not words or words[-1] not in (*_SHAPE_OF_PLURAL, "shapes"):
            raise ValueError(f"not a plural object description: {text!r}")
        words[-1] = _SHAPE_OF_PLURAL.get(words[-1], "shape")
    size = _SIZE_OF_WORD.get(words[0]) if words else None
    words = words[1:] if size else words
    color = words[0] if words and words[0] in COLORS else None
    words = words[1:] if color else words
    if len(words) != 1 or (words[0] not in SHAPES and words[0] != "shape"):
        raise ValueError(f"not an object description: {text!r}")
    shape = None if words[0] == "shape" else words[0]
    if shape is None and color is None and size is None:
        raise ValueError(f"'shape' alone describes nothing: {text!r}")
    return Desc(shape=shape, color=color, size=size)


def parse_query(text: str) -> QuerySpec:
    """Read a generated query back into its spec; raises ``ValueError`` on anything else."""
    text = " ".join(text.strip().lower().split())
    if m := _ROW.fullmatch(text):
        count, color, plural, arrangement = m.groups()
        if color not in COLORS or plural not in _SHAPE_OF_PLURAL:
            raise ValueError(f"not a synthetic-scene query: {text!r}")
        member = Desc(shape=_SHAPE_OF_PLURAL[plural], color=color)
        return GroupQuery(arrangement, (member,) * _NUMBER_OF_WORD[count])
    if m := _ALL.fullmatch(text):
        return MultipleQuery(parse_desc(m[1], plural=True))
    if m := _COUNTED.fullmatch(text):
        side = _SIDE_OF_WORDS[m[3]] if m[3] else None
        return MultipleQuery(parse_desc(m[2], plural=True), _NUMBER_OF_WORD[m[1]], side)
    if m := _PAIR.fullmatch(text):
        return GroupQuery(m[2], (parse_desc(m[1]), parse_desc(m[3])))
    if m := _RELATION.fullmatch(text):
        return RelationQuery(parse_desc(m[1]), m[2], parse_desc(m[3]))
    if m := _NTH.fullmatch(text):
        return OrdinalQuery(parse_desc(m[2]), m[3], _RANK_OF_WORD[m[1]])
    if m := _EXTREME.fullmatch(text):
        return OrdinalQuery(parse_desc(m[2]), _ORDER_OF_WORD[m[1]], 1)
    if m := _ATTRIBUTE.fullmatch(text):
        return AttributeQuery(parse_desc(m[1]))
    raise ValueError(f"not a synthetic-scene query: {text!r}")
