"""A domain: the part of the vocabulary a dataset draws from, its ground and its object scale.

Two datasets of disjoint domains (other colours, other shapes, another ground) test whether a
model trained on one transfers to the other. The default domain is the whole vocabulary on
the textured ground, and draws exactly as the generator always has, so its datasets stay
byte-identical. Held-out pairs are those of :data:`~sceneloc.data.synth.vocab.HELD_OUT` inside
the domain's colours and shapes: train queries never name them, and a compositional split
needs at least one of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sceneloc.data.synth.options import MAX_SIZE, SynthError
from sceneloc.data.synth.vocab import (
    ALL_QUERY_TYPES,
    ARRANGEMENTS,
    COLORS,
    CONTAINERS,
    HELD_OUT,
    QUERY_TYPES,
    SHAPES,
    SIZE_RANGES,
)

#: Grounds: ``texture`` (tinted grey with gradient, blotches, maybe stripes: the default),
#: ``light`` and ``dark`` (the same texture, brighter or darker), ``noise`` (strong coloured
#: per-pixel noise over mid grey).
BACKGROUNDS: tuple[str, ...] = ("texture", "light", "dark", "noise")
#: Large shapes are at most this fraction of the image side, whatever the object scale.
MAX_LARGE_FRACTION = 1 / 3


@dataclass(frozen=True)
class Domain:
    """What scenes are made of: colours, shapes, query types, ground and object scale.

    ``object_size_base``: shapes are drawn at the pixel sizes of a scene of that side (``None``:
    the image's own side), so a 256 px image with base 512 has the large objects of a 512 px one.
    """

    colors: tuple[str, ...] = tuple(COLORS)
    shapes: tuple[str, ...] = SHAPES
    background: str = "texture"
    object_size_base: int | None = None
    query_types: tuple[str, ...] = QUERY_TYPES

    @property
    def held_out(self) -> tuple[tuple[str, str], ...]:
        """The held-out (colour, shape) pairs inside this domain, sorted (sets iterate randomly)."""
        return tuple(sorted(p for p in HELD_OUT if p[0] in self.colors and p[1] in self.shapes))

    @property
    def containers(self) -> tuple[str, ...]:
        """Shapes of this domain that an "inside" arrangement may put a smaller shape in."""
        return tuple(s for s in CONTAINERS if s in self.shapes)

    @property
    def arrangements(self) -> tuple[str, ...]:
        """Planted arrangements this domain can draw ("inside" needs a container shape)."""
        return tuple(a for a in ARRANGEMENTS if a != "inside" or self.containers)

    def size_base(self, side: int) -> int:
        """The side whose pixel sizes the shapes of a ``side`` px image are drawn at."""
        return self.object_size_base or side

    def check(self, size: int, compositional: bool = False) -> None:
        """Raise :class:`SynthError` with a one-line reason for a domain that cannot work on
        ``size`` px images (``compositional``: a compositional split is asked for)."""
        if self.background not in BACKGROUNDS:
            raise SynthError(
                f"unknown background {self.background!r}; choose from {', '.join(BACKGROUNDS)}"
            )
        if self.object_size_base is not None:
            base = self.object_size_base
            if not 1 <= base <= MAX_SIZE:
                raise SynthError(f"object size base must be 1 to {MAX_SIZE} pixels, got {base}")
            large = SIZE_RANGES["large"][1] * base
            if large > MAX_LARGE_FRACTION * size:
                raise SynthError(
                    f"object size base {base} makes large shapes {large:.0f} px, more than a "
                    f"third of the {size} px image; use a base of at most "
                    f"{int(MAX_LARGE_FRACTION * size / SIZE_RANGES['large'][1])}"
                )
        if len(self.colors) < 2:
            raise SynthError("need at least 2 colours (a distractor differs by colour)")
        nameable = {c for c in self.colors for s in self.shapes if (c, s) not in HELD_OUT}
        if len(nameable) < 2:
            raise SynthError(
                "these colours and shapes leave fewer than 2 colours outside the held-out "
                f"pairs ({_pairs(self.held_out)}); add colours or shapes"
            )
        if compositional and not self.held_out:
            raise SynthError(
                "no held-out colour-shape pair among these colours and shapes, so the "
                f"compositional split would be empty (held out: {_pairs(sorted(HELD_OUT))}); "
                "drop compositional from the splits"
            )


#: The whole vocabulary on the textured ground: what the generator always drew.
DEFAULT_DOMAIN = Domain()


def _pairs(pairs: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{c} {s}" for c, s in pairs) or "none"


def _names(text: str | Iterable[str], known: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A comma-separated list (or an iterable) of known names, each once, in vocabulary order."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SynthError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}")
    if len(set(names)) != len(names):
        raise SynthError(f"a {what} is named twice in {', '.join(names)}")
    if not names:
        raise SynthError(f"name at least one {what}")
    return tuple(n for n in known if n in names)  # the vocabulary's order: a stable draw


def make_domain(
    colors: str | Iterable[str] | None = None,
    shapes: str | Iterable[str] | None = None,
    background: str = "texture",
    object_size_base: int | None = None,
    query_types: str | Iterable[str] | None = None,
) -> Domain:
    """A :class:`Domain` from names (comma-separated strings or lists; ``None``: all)."""
    return Domain(
        colors=tuple(COLORS) if colors is None else _names(colors, tuple(COLORS), "colour"),
        shapes=SHAPES if shapes is None else _names(shapes, SHAPES, "shape"),
        background=background,
        object_size_base=object_size_base,
        query_types=(
            QUERY_TYPES
            if query_types is None
            else _names(query_types, ALL_QUERY_TYPES, "query type")
        ),
    )
