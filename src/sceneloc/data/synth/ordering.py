"""The one rule for "the second star from the left" and "the largest red shape".

Both the generator (which rank to ask for) and the resolver (which objects a query can mean)
rank objects here, so a query is always asked in the order it is read.

Objects are ranked by centre x (y for top/bottom) or by extent; in the tolerant reading,
centres closer than half the median extent, or extents within :data:`SIZE_TOLERANCE` of each
other, may come in either order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from sceneloc.data.synth.objects import SceneObject

SIZE_TOLERANCE = 1.25


def order_key(order: str) -> Callable[[SceneObject], float]:
    """Smaller comes first; sizes compare by log extent so a tolerance is a ratio."""
    return {
        "left": lambda o: o.center[0],
        "right": lambda o: -o.center[0],
        "top": lambda o: o.center[1],
        "bottom": lambda o: -o.center[1],
        "largest": lambda o: -math.log(max(o.extent, 1e-6)),
        "smallest": lambda o: math.log(max(o.extent, 1e-6)),
    }[order]


def _possible_ranks(key: float, others: Sequence[float], tolerance: float) -> range:
    """The 1-based ranks of an object keyed ``key``: rank r when fewer than r others come
    clearly (by more than ``tolerance``) before it and at least r - 1 others may."""
    clearly_before = sum(1 for other in others if other < key - tolerance)
    maybe_before = sum(1 for other in others if other <= key + tolerance)
    return range(clearly_before + 1, maybe_before + 2)


def possible_ranks(objects: Sequence[SceneObject], order: str, strict: bool = False) -> list[range]:
    """The 1-based ranks each of ``objects`` can take in ``order`` (several when unclear)."""
    key = order_key(order)
    if strict:
        tolerance = 0.0
    elif order in ("largest", "smallest"):
        tolerance = math.log(SIZE_TOLERANCE)
    else:
        tolerance = 0.5 * float(np.median([o.extent for o in objects])) if objects else 0.0
    keys = [key(o) for o in objects]
    return [_possible_ranks(keys[i], keys[:i] + keys[i + 1 :], tolerance) for i in range(len(keys))]


def ranked(
    objects: Sequence[SceneObject], order: str, rank: int, strict: bool = False
) -> list[SceneObject]:
    """The objects that can be ``rank``-th (1-based) in ``order``; several when it is unclear."""
    ranks = possible_ranks(objects, order, strict)
    return [obj for obj, possible in zip(objects, ranks) if rank in possible]


def strict_rank(target: SceneObject, objects: Sequence[SceneObject], order: str) -> int:
    """The first rank the strict reading lets ``target`` take among ``objects`` in ``order``."""
    key = order_key(order)
    others = [key(o) for o in objects if o.id != target.id]
    return _possible_ranks(key(target), others, 0.0).start
