"""One synthetic scene: shapes placed with bounded occlusion, planted groups, verified queries.

A scene is laid out first (groups planted on the empty canvas, then random shapes until the
object count is reached), queries are then looked for in that layout and kept only when the
resolver finds their referent alone (:func:`~sceneloc.data.synth.queries.is_unambiguous`)
and a same-shape distractor exists. A layout that cannot carry enough queries is redrawn
from the same generator, so a seed still fixes the result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from sceneloc.boxes import Box, union_box
from sceneloc.data.format import Sample
from sceneloc.data.synth.draw import ShapeMask, compose, shape_mask
from sceneloc.data.synth.queries import (
    AttributeQuery,
    Desc,
    GroupQuery,
    Match,
    OrdinalQuery,
    QuerySpec,
    RelationQuery,
    SceneObject,
    is_unambiguous,
    related,
    render_query,
    spec_to_dict,
    target_ids,
)
from sceneloc.data.synth.vocab import (
    COLORS,
    CONTAINERS,
    HELD_OUT,
    ORDERS,
    QUERY_TYPES,
    RELATIONS,
    SHAPES,
    SIZE_RANGES,
    SIZES,
    SPLITS,
)
from sceneloc.errors import SceneLocError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Every shape keeps at least this fraction of its pixels visible, whatever is drawn over it.
MIN_VISIBLE = 0.7
#: Above this many objects all shapes shrink by sqrt(CROWD / n), keeping the fill similar.
CROWD = 60
#: Smallest allowed extent, in pixels, of a small shape.
MIN_PIXELS = 7
MIN_SIZE, MAX_SIZE = 160, 4096
MIN_OBJECTS, MAX_OBJECTS = 4, 200
MAX_QUERIES = 20
MARGIN = 2
ATTEMPTS = 30

COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = tuple(sorted(HELD_OUT))  # sets iterate randomly


class SynthError(SceneLocError, ValueError):
    """Bad generator settings (an impossible range, too small an image) or an unwritable output."""


def check_options(size: int, min_objects: int, max_objects: int, queries_per_image: int) -> None:
    """Raise :class:`SynthError` with a one-line reason for settings that cannot work."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise SynthError(f"size must be {MIN_SIZE} to {MAX_SIZE} pixels, got {size}")
    if not MIN_OBJECTS <= min_objects <= max_objects <= MAX_OBJECTS:
        raise SynthError(
            f"need {MIN_OBJECTS} <= min objects <= max objects <= {MAX_OBJECTS}, "
            f"got min {min_objects} and max {max_objects}"
        )
    smallest = SIZE_RANGES["small"][0] * size * crowd_scale(max_objects)
    if smallest < MIN_PIXELS:
        raise SynthError(
            f"{max_objects} objects do not fit a {size} px image (small shapes would be "
            f"{smallest:.1f} px); use a larger size or fewer objects"
        )
    if not 1 <= queries_per_image <= MAX_QUERIES:
        raise SynthError(f"queries per image must be 1 to {MAX_QUERIES}, got {queries_per_image}")


def crowd_scale(num_objects: int) -> float:
    return min(1.0, math.sqrt(CROWD / num_objects))


# --- layout --------------------------------------------------------------------------------


@dataclass
class _Item:
    shape: str
    color: str
    size: str
    x: int
    y: int
    mask: ShapeMask


class _Canvas:
    """Placed shapes and, per pixel, which one is on top: occlusion is counted, not guessed."""

    def __init__(self, size: int, capacity: int) -> None:
        self.size = size
        self.owner = np.full((size, size), -1, np.int16)
        self.visible = np.zeros(capacity, np.int64)
        self.area = np.zeros(capacity, np.int64)
        self.items: list[_Item] = []

    def place(self, shape: str, color: str, size: str, diameter: int, x: int, y: int) -> int | None:
        """Draw on top at ``(x, y)`` unless that would hide too much of a shape below."""
        mask = shape_mask(shape, diameter)
        limit = self.size - MARGIN
        if x < MARGIN or y < MARGIN or x + mask.width > limit or y + mask.height > limit:
            return None
        if len(self.items) >= len(self.area):
            return None
        region = self.owner[y : y + mask.height, x : x + mask.width]
        under = region[mask.mask]
        under = under[under >= 0]
        if under.size:
            ids, counts = np.unique(under, return_counts=True)
            left = self.visible[ids] - counts
            if np.any(left < MIN_VISIBLE * self.area[ids]):
                return None
            self.visible[ids] = left
        index = len(self.items)
        region[mask.mask] = index
        self.visible[index] = self.area[index] = mask.area
        self.items.append(_Item(shape, color, size, x, y, mask))
        return index

    def place_centred(
        self, shape: str, color: str, size: str, diameter: int, cx: float, cy: float
    ) -> int | None:
        mask = shape_mask(shape, diameter)
        x, y = round(cx - mask.width / 2), round(cy - mask.height / 2)
        return self.place(shape, color, size, diameter, x, y)

    def place_anywhere(
        self,
        rng: np.random.Generator,
        shape: str,
        color: str,
        size: str,
        diameter: int,
        tries: int = 30,
    ) -> int | None:
        mask = shape_mask(shape, diameter)
        room_x = self.size - 2 * MARGIN - mask.width
        room_y = self.size - 2 * MARGIN - mask.height
        if room_x < 0 or room_y < 0:
            return None
        for _ in range(tries):
            x = MARGIN + int(rng.integers(room_x + 1))
            y = MARGIN + int(rng.integers(room_y + 1))
            index = self.place(shape, color, size, diameter, x, y)
            if index is not None:
                return index
        return None

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, int]:
        return self.owner.copy(), self.visible.copy(), len(self.items)

    def restore(self, state: tuple[np.ndarray, np.ndarray, int]) -> None:
        self.owner, self.visible, count = state[0], state[1], state[2]
        del self.items[count:]

    def objects(self) -> list[SceneObject]:
        return [
            SceneObject(
                id=i,
                shape=item.shape,
                color=item.color,
                size=item.size,
                box=(
                    float(item.x),
                    float(item.y),
                    float(item.x + item.mask.width),
                    float(item.y + item.mask.height),
                ),
                area=item.mask.area,
                visible=round(float(self.visible[i]) / item.mask.area, 3),
            )
            for i, item in enumerate(self.items)
        ]


def _choice(rng: np.random.Generator, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


def _shuffled(rng: np.random.Generator, items: Sequence[T]) -> list[T]:
    return [items[i] for i in rng.permutation(len(items))]


def target_ok(pair: tuple[str, str], split: str) -> bool:
    """A referent's colour-shape pair: held out exactly when the split is compositional."""
    return (pair in HELD_OUT) == (split == "compositional")


def named_ok(pair: tuple[str, str], split: str) -> bool:
    """Any other named object (an anchor, a container): never a held-out pair outside
    the compositional split, so train queries never mention one at all."""
    return split == "compositional" or pair not in HELD_OUT


def _pair(rng: np.random.Generator, split: str, role: str = "any") -> tuple[str, str]:
    """A colour-shape pair for a ``target``, another ``named`` object or ``any`` object."""
    if role == "target" and split == "compositional":
        return _choice(rng, HELD_OUT_PAIRS)
    if role == "any" and split == "compositional" and rng.random() < 0.3:
        return _choice(rng, HELD_OUT_PAIRS)  # enough held-out pairs to ask about
    while True:
        pair = _choice(rng, COLOR_NAMES), _choice(rng, SHAPES)
        if role == "any" or (role == "target" and target_ok(pair, split)):
            return pair
        if role == "named" and named_ok(pair, split):
            return pair


def _diameter(rng: np.random.Generator, size: str, side: int, scale: float) -> int:
    low, high = SIZE_RANGES[size]
    return max(MIN_PIXELS, round(rng.uniform(low, high) * side * scale))


def _plant(
    rng: np.random.Generator, canvas: _Canvas, arrangement: str, split: str, scale: float
) -> list[int] | None:
    """Place one arrangement's members (in the order a query names them), or nothing."""
    side = canvas.size
    color, shape = _pair(rng, split, "target")
    for _ in range(20):
        state = canvas.snapshot()
        members = _try_plant(rng, canvas, arrangement, split, scale, side, color, shape)
        if members is not None:
            return members
        canvas.restore(state)
    return None


def _try_plant(
    rng: np.random.Generator,
    canvas: _Canvas,
    arrangement: str,
    split: str,
    scale: float,
    side: int,
    color: str,
    shape: str,
) -> list[int] | None:
    def other_pair() -> tuple[str, str]:
        while True:
            pair = _pair(rng, split, "named")
            if pair[0] != color:
                return pair

    if arrangement in ("row", "column"):
        count = int(rng.integers(3, 5))
        size = _choice(rng, ("small", "medium"))
        d = _diameter(rng, size, side, scale)
        mask = shape_mask(shape, d)
        extent = max(mask.width, mask.height)
        step = extent * rng.uniform(1.3, 1.6)  # the resolver's strict rows: 1 to 2 extents
        length = step * (count - 1) + extent
        if length > side - 2 * MARGIN - 2:
            return None
        along = MARGIN + 1 + extent / 2 + rng.uniform(0, side - 2 * MARGIN - 2 - length)
        across = rng.uniform(MARGIN + extent, side - MARGIN - extent)
        members = []
        for k in range(count):
            c = along + k * step
            cx, cy = (c, across) if arrangement == "row" else (across, c)
            index = canvas.place_centred(shape, color, size, d, cx, cy)
            if index is None:
                return None
            members.append(index)
        return members
    other_color, other_shape = other_pair()
    if arrangement == "inside":
        other_shape = _choice(rng, CONTAINERS)
        outer_d = _diameter(rng, "large", side, scale)
        inner_d = min(_diameter(rng, "small", side, scale), int(0.42 * outer_d))
        outer = canvas.place_anywhere(rng, other_shape, other_color, "large", outer_d, tries=5)
        if outer is None:
            return None
        item = canvas.items[outer]
        cx, cy = item.x + item.mask.width / 2, item.y + item.mask.height / 2
        inner = canvas.place_centred(shape, color, "small", inner_d, cx, cy)
        return None if inner is None else [inner, outer]
    # "on top of": the named shape stands on the other, centred, a pixel or two above it
    lower_size, upper_size = _choice(rng, ("medium", "large")), _choice(rng, ("small", "medium"))
    lower_d, upper_d = (
        _diameter(rng, lower_size, side, scale),
        _diameter(rng, upper_size, side, scale),
    )
    upper_mask = shape_mask(shape, upper_d)
    lower = canvas.place_anywhere(rng, other_shape, other_color, lower_size, lower_d, tries=5)
    if lower is None:
        return None
    item = canvas.items[lower]
    smallest = min(max(upper_mask.width, upper_mask.height), max(item.mask.width, item.mask.height))
    gap = int(rng.integers(1, max(2, int(0.12 * smallest)) + 1))
    cx = item.x + item.mask.width / 2
    y = item.y - gap - upper_mask.height
    upper = canvas.place(shape, color, upper_size, upper_d, round(cx - upper_mask.width / 2), y)
    return None if upper is None else [upper, lower]


def _layout(
    rng: np.random.Generator, side: int, count: int, arrangements: list[str], split: str
) -> tuple[list[SceneObject], list[dict[str, Any]], list[_Item]] | None:
    """Plant the arrangements (each with a same-shape distractor), then fill up to ``count``."""
    scale = crowd_scale(count)
    canvas = _Canvas(side, count)
    groups: list[dict[str, Any]] = []
    for arrangement in arrangements:
        if len(canvas.items) + 5 > count:  # a group of up to 4 and its distractor
            break
        members = _plant(rng, canvas, arrangement, split, scale)
        if members is None:
            continue
        groups.append({"id": len(groups), "arrangement": arrangement, "members": members})
        first = canvas.items[members[0]]
        color = _choice(rng, [c for c in COLOR_NAMES if c != first.color])
        size = _choice(rng, SIZES)
        canvas.place_anywhere(rng, first.shape, color, size, _diameter(rng, size, side, scale))
    while len(canvas.items) < count:
        color, shape = _pair(rng, split)
        size = _choice(rng, SIZES)
        placed = canvas.place_anywhere(rng, shape, color, size, _diameter(rng, size, side, scale))
        if placed is None and size != "small":
            d = _diameter(rng, "small", side, scale)
            placed = canvas.place_anywhere(rng, shape, color, "small", d)
        if placed is None:
            return None
    return canvas.objects(), groups, canvas.items


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneQuery:
    """A verified query: its spec and text, what it names and the box it refers to."""

    spec: QuerySpec
    text: str
    match: Match
    target: Match
    box: Box
    category: str

    @property
    def type(self) -> str:
        return self.spec.type


def _finish(
    rng: np.random.Generator, objects: list[SceneObject], spec: QuerySpec, match: Match
) -> SceneQuery | None:
    """The query, if it is unambiguous and a same-shape object outside it is in the scene."""
    targets = target_ids(spec, match)
    shape = objects[targets[0]].shape
    if not any(o.shape == shape and o.id not in match for o in objects):
        return None
    if not is_unambiguous(spec, objects, match):
        return None
    box = union_box([objects[i].box for i in targets])
    return SceneQuery(spec, render_query(spec, rng), match, targets, box, shape)


def unique_desc(
    rng: np.random.Generator, obj: SceneObject, objects: Sequence[SceneObject]
) -> Desc | None:
    """The shortest description fitting ``obj`` alone (a random one of the shortest)."""
    tiers = (
        [Desc(obj.shape, obj.color), Desc(obj.shape, size=obj.size)],
        [Desc(obj.shape, obj.color, obj.size)],
    )
    for tier in tiers:
        fits = [d for d in tier if is_unambiguous(AttributeQuery(d), objects, (obj.id,))]
        if fits:
            return _choice(rng, fits)
    return None


class _Asker:
    """Finds one new query of a given type in a laid-out scene."""

    def __init__(
        self,
        rng: np.random.Generator,
        objects: list[SceneObject],
        groups: list[dict[str, Any]],
        split: str,
    ) -> None:
        self.rng, self.objects, self.groups, self.split = rng, objects, groups, split
        self.used: set[Match] = set()
        self.used_groups: set[int] = set()

    def targets(self, limit: int) -> list[SceneObject]:
        fits = [
            o for o in self.objects if target_ok(o.pair, self.split) and (o.id,) not in self.used
        ]
        return _shuffled(self.rng, fits)[:limit]

    def ask(self, kind: str) -> SceneQuery | None:
        query = getattr(self, kind)()
        if query is not None:
            self.used.add(query.target)
        return query

    def attribute(self) -> SceneQuery | None:
        for obj in self.targets(60):
            desc = unique_desc(self.rng, obj, self.objects)
            if desc is not None:
                query = _finish(self.rng, self.objects, AttributeQuery(desc), (obj.id,))
                if query is not None:
                    return query
        return None

    def relation(self) -> SceneQuery | None:
        rng, objects = self.rng, self.objects
        for target in self.targets(20):
            anchors = [a for a in objects if named_ok(a.pair, self.split) and a.id != target.id]
            for anchor in _shuffled(rng, anchors):
                relations = [r for r in RELATIONS if related(target, anchor, r, strict=True)]
                if not relations:
                    continue
                anchor_desc = unique_desc(rng, anchor, objects)
                if anchor_desc is None:
                    continue
                relation = _choice(rng, relations)
                same = sum(1 for o in objects if o.pair == target.pair)
                descs = [Desc(target.shape)] + (
                    [Desc(target.shape, target.color)] if same > 1 else []
                )
                for desc in descs:
                    spec = RelationQuery(desc, relation, anchor_desc)
                    query = _finish(rng, objects, spec, (target.id, anchor.id))
                    if query is not None:
                        return query
        return None

    def ordinal(self) -> SceneQuery | None:
        rng, objects = self.rng, self.objects
        for target in self.targets(25):
            for order in _shuffled(rng, ORDERS):
                descs = [
                    Desc(target.shape),
                    Desc(color=target.color),
                    Desc(target.shape, target.color),
                ]
                for desc in _shuffled(rng, descs):
                    candidates = [o for o in objects if desc.matches(o)]
                    if len(candidates) < 2:
                        continue
                    rank = _strict_rank(target, candidates, order)
                    if rank > (1 if order in ("largest", "smallest") else 3):
                        continue
                    if rank > 1 and rank == len(candidates):  # the last: ask from the other end
                        continue
                    query = _finish(rng, objects, OrdinalQuery(desc, order, rank), (target.id,))
                    if query is not None:
                        return query
        return None

    def group(self) -> SceneQuery | None:
        for group in self.groups:
            if group["id"] in self.used_groups:
                continue
            members = [self.objects[i] for i in group["members"]]
            if not target_ok(members[0].pair, self.split) or not all(
                named_ok(m.pair, self.split) for m in members[1:]
            ):
                continue
            descs = tuple(Desc(m.shape, m.color) for m in members)
            if group["arrangement"] in ("row", "column"):
                descs = (descs[0],) * len(members)
            spec = GroupQuery(group["arrangement"], descs)
            query = _finish(self.rng, self.objects, spec, tuple(group["members"]))
            if query is not None:
                self.used_groups.add(group["id"])
                return query
        return None


def _strict_rank(target: SceneObject, candidates: list[SceneObject], order: str) -> int:
    """1-based position of ``target`` among ``candidates`` in ``order``."""
    if order in ("largest", "smallest"):
        sign = -1 if order == "largest" else 1
        return 1 + sum(1 for o in candidates if sign * o.extent < sign * target.extent)
    axis = 0 if order in ("left", "right") else 1
    sign = 1 if order in ("left", "top") else -1
    value = sign * target.center[axis]
    return 1 + sum(1 for o in candidates if sign * o.center[axis] < value)


def plan_types(rng: np.random.Generator, count: int) -> list[str]:
    """Every type once (in random order) while there is room, then random types."""
    plan = _shuffled(rng, QUERY_TYPES)[:count]
    plan += [_choice(rng, QUERY_TYPES) for _ in range(count - len(plan))]
    return plan


def _ask_all(
    rng: np.random.Generator,
    objects: list[SceneObject],
    groups: list[dict[str, Any]],
    split: str,
    plan: list[str],
) -> list[SceneQuery]:
    asker = _Asker(rng, objects, groups, split)
    queries = []
    for kind in plan:  # a type this scene cannot carry gives way to the others
        for other in [kind, *(t for t in QUERY_TYPES if t != kind)]:
            query = asker.ask(other)
            if query is not None:
                queries.append(query)
                break
    return queries


# --- scenes --------------------------------------------------------------------------------


@dataclass
class Scene:
    """One generated image, its objects and its verified queries (and their samples)."""

    image: Image.Image
    objects: list[SceneObject]
    queries: list[SceneQuery]
    split: str
    image_id: str
    image_path: str
    groups: list[dict[str, Any]] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        """``image, objects, samples = make_scene(rng)`` for callers that want just those."""
        return iter((self.image, self.objects, self.samples))

    def sample_id(self, index: int) -> str:
        return f"{self.image_id}_{index}"

    @property
    def samples(self) -> list[Sample]:
        """The queries in the common sample format (``image`` is ``image_path``)."""
        return [
            Sample(
                id=self.sample_id(i),
                image=self.image_path,
                query=q.text,
                box=q.box,
                split=self.split,
                type=q.type,
                category=q.category,
                image_id=self.image_id,
            )
            for i, q in enumerate(self.queries)
        ]

    def record(self) -> dict[str, Any]:
        """The ``scenes.jsonl`` line: the image, every object, the groups and query specs."""
        return {
            "image": self.image_path,
            "image_id": self.image_id,
            "width": self.image.width,
            "height": self.image.height,
            "split": self.split,
            "objects": [o.to_dict() for o in self.objects],
            "groups": self.groups,
            "queries": [
                {
                    "id": self.sample_id(i),
                    "type": q.type,
                    "query": q.text,
                    "spec": spec_to_dict(q.spec),
                    "target": list(q.target),
                    "named": list(q.match),
                }
                for i, q in enumerate(self.queries)
            ],
        }


def make_scene(
    rng: np.random.Generator,
    *,
    size: int = 512,
    min_objects: int = 20,
    max_objects: int = 60,
    queries_per_image: int = 6,
    split: str = "train",
    image_id: str = "000000",
    image_path: str | None = None,
) -> Scene:
    """Generate one scene in memory; the same generator state gives the same scene.

    ``split`` decides which colour-shape pairs queries may name (``compositional``: targets
    are held-out pairs; any other split: held-out pairs are never named). Raises
    :class:`SynthError` for impossible settings.
    """
    check_options(size, min_objects, max_objects, queries_per_image)
    if split not in SPLITS:
        raise SynthError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    count = int(rng.integers(min_objects, max_objects + 1))
    plan = plan_types(rng, queries_per_image)
    arrangements = [
        _choice(rng, ("inside", "on top of", "row", "column"))
        for _ in range(min(2, plan.count("group")))
    ]
    best: tuple[list[SceneQuery], list[SceneObject], list[dict[str, Any]], list[_Item]] | None
    best = None
    for attempt in range(ATTEMPTS):
        layout = _layout(rng, size, count, arrangements, split)
        if layout is None:
            continue
        objects, groups, items = layout
        queries = _ask_all(rng, objects, groups, split, plan)
        if best is None or len(queries) > len(best[0]):
            best = queries, objects, groups, items
        if len(queries) == queries_per_image:
            break
        logger.debug("scene %s attempt %d: %d queries", image_id, attempt, len(queries))
    if best is None or not best[0]:
        raise SynthError(
            f"could not lay out {count} objects with a query on a {size} px image; "
            "try a larger size or fewer objects"
        )
    queries, objects, groups, items = best
    if len(queries) < queries_per_image:
        logger.info("scene %s has %d of %d queries", image_id, len(queries), queries_per_image)
    image = compose(rng, size, [(it.x, it.y, it.mask, it.color) for it in items])
    path = image_path if image_path is not None else f"images/{image_id}.png"
    return Scene(image, objects, queries, split, image_id, path, groups)
