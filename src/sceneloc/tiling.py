"""Tiling: a large image looked at whole and tile by tile, the tiles' answers merged.

A backend shrinks an image to its input side, so in a 4096 px scene a small thing becomes
a few pixels. With tiling the whole image is still asked, and overlapping tiles at the
model's scale (SAHI's slicing) *propose* candidates too; they are moved into the image's
pixels, merged per query (greedy non-maximum merging by intersection over the smaller box,
SAHI's default, with non-maximum suppression for the candidates the model is unsure of)
and decided on context crops at the model's scale rather than inside the tile that found
them: a query naming other things ("the hexagon right of the large cyan hexagon") is asked
on crops centred on where those things are, any other on a crop centred on each candidate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from sceneloc.boxes import iou_matrix
from sceneloc.candidates import Candidates
from sceneloc.errors import InvalidOptionError
from sceneloc.registry import Capability

if TYPE_CHECKING:
    from sceneloc.backends.base import Backend

logger = logging.getLogger(__name__)

#: What ``tiles=`` takes: ``"auto"`` (tile when the image is much larger than the model's
#: input), ``"off"``, or a tile side in pixels.
TileSetting = Literal["auto", "off"] | int

#: Tiles cut out and handed to the backend at a time: the crops in memory stay few
#: whatever the image's size (the backend batches them further its own way).
TILES_PER_CALL = 64
#: ``"auto"`` tiles an image whose longer side is more than this many model input sides.
AUTO_FACTOR = 2.0
#: Tiles propose candidates scoring this fraction of the sure score: the context crop may
#: raise a candidate a tile alone was unsure of.
PROPOSAL_FRACTION = 0.5
#: Two candidates merge when the intersection covers this much of the smaller one.
MERGE_OVERLAP = 0.5
#: Candidates the model is unsure of are suppressed by ones overlapping them this much (IoU).
SUPPRESS_OVERLAP = 0.5
#: The best merged candidates of each query re-ranked on their context crop.
CONTEXT_CANDIDATES = 5
#: The best places of each other thing a query names that its target is looked for near.
ANCHOR_CANDIDATES = 8
#: A context crop spans at least this many times its candidate's longer side.
CONTEXT_SCALE = 4

#: ``(image, queries, threshold) -> the candidates of each query``.
Predict = Callable[[Image.Image, list[str], float], list[Candidates]]
#: ``(tiles, queries, threshold) -> per tile, the candidates of each query``.
PredictTiles = Callable[[list[Image.Image], list[str], float], list[list[Candidates]]]


def parse_tiles(value: str | int | None) -> TileSetting:
    """``"auto"``, ``"off"`` or a positive tile side (an int or its digits)."""
    if value is None:
        return "off"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", "off"):
            return text  # type: ignore[return-value]
        try:
            value = int(text)
        except ValueError:
            raise InvalidOptionError(
                f"tiles must be auto, off or a tile size in pixels, not {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"tile size must be a positive number of pixels, not {value!r}")
    return value


def parse_overlap(value: float) -> float:
    """A tile overlap: a fraction of the tile side, at least 0 and below 1."""
    overlap = float(value)
    if not 0.0 <= overlap < 1.0:
        raise InvalidOptionError(
            f"tile overlap must be a fraction of the tile, at least 0 and below 1, not {value}"
        )
    return overlap


def check_tiling(setting: TileSetting, backend: Backend) -> TileSetting:
    """The setting a backend can follow: a family whose scores depend on the image's other
    things (generative ones) is not tiled; ``auto`` then means the whole image only, a
    size is refused."""
    if setting == "off" or Capability.SAFE_TO_TILE in backend.family.capabilities:
        return setting
    if setting == "auto":
        logger.info("%s models are not safe to tile: the whole image only", backend.family.name)
        return "off"
    raise InvalidOptionError(
        f"tiles={setting}: {backend.family.name} models are not safe to tile "
        "(their scores depend on the whole image); use tiles=auto or off"
    )


@dataclass(frozen=True)
class Tiling:
    """How one image is tiled: the tiles' side and overlap, and the score at which the
    backend deems a candidate sure (its default threshold), which merging and anchors use
    whatever threshold the call reports at."""

    side: int
    overlap: float
    confident: float

    @property
    def floor(self) -> float:
        """The score a tile's or a crop's candidate needs to be proposed at all."""
        return self.confident * PROPOSAL_FRACTION


def tile_side(setting: TileSetting, width: int, height: int, input_side: int) -> int | None:
    """The side of this image's tiles, or ``None`` to look at it whole only."""
    if setting == "off":
        return None
    if setting == "auto":
        return input_side if max(width, height) > AUTO_FACTOR * input_side else None
    return setting


def tile_windows(width: int, height: int, side: int, overlap: float) -> np.ndarray:
    """``(n, 4)`` int ``[x1, y1, x2, y2]`` tiles covering the image row by row, neighbours
    sharing ``int(overlap * side)`` pixels, the last of a row or column moved back inside
    the image (as ``sahi.slicing.get_slice_bboxes``); a side beyond the image is cut to it."""
    windows = []
    for y1 in _starts(height, side, overlap):
        for x1 in _starts(width, side, overlap):
            windows.append([x1, y1, min(x1 + side, width), min(y1 + side, height)])
    return np.asarray(windows, dtype=np.int64)


def _starts(length: int, side: int, overlap: float) -> list[int]:
    """Where the tiles of one axis start."""
    if side >= length:
        return [0]
    step = side - int(overlap * side)
    starts = list(range(0, length - side, step))
    return [*starts, length - side]


def merge(candidates: Candidates, threshold: float) -> Candidates:
    """One query's candidates from the whole image and its tiles, joined: those scoring at
    least ``threshold`` merge greedily by intersection over the smaller box (a tile's cut
    part of a thing joins the whole of it); the others only survive where no better one
    overlaps them (NMS), so a weak guess never widens a sure one."""
    sure = candidates.scores >= threshold
    merged = candidates[sure].merge_overlapping(MERGE_OVERLAP, "ios")
    joined = Candidates.concatenate([merged, candidates[~sure]])
    return joined.nms(SUPPRESS_OVERLAP)


def context_window(box: np.ndarray, side: int, width: int, height: int) -> list[int]:
    """A square crop centred on ``box``, ``side`` or ``CONTEXT_SCALE`` box sides wide
    (whichever is more), moved inside the image and cut to it."""
    extent = max(side, CONTEXT_SCALE * float(max(box[2] - box[0], box[3] - box[1])))
    extent = int(min(extent, max(width, height)))
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x1 = int(np.clip(round(centre_x - extent / 2), 0, max(width - extent, 0)))
    y1 = int(np.clip(round(centre_y - extent / 2), 0, max(height - extent, 0)))
    return [x1, y1, min(x1 + extent, width), min(y1 + extent, height)]


def predict_tiled(
    image: Image.Image,
    queries: list[str],
    threshold: float,
    tiling: Tiling,
    predict: Predict,
    predict_tiles: PredictTiles,
) -> list[Candidates]:
    """Each query's candidates in ``image``: asked whole (``predict``) and in tiles
    (``predict_tiles``), merged; a query naming other things answered around their likely
    places, any other re-ranked on context crops. An image within one tile is asked whole
    only, as untiled."""
    width, height = image.size
    windows = tile_windows(width, height, tiling.side, tiling.overlap)
    if len(windows) == 1:
        return predict(image, queries, threshold)
    logger.info("%dx%d image: %d tiles of %d px", width, height, len(windows), tiling.side)
    anchors = {query: anchor_phrases(query) for query in queries}
    asked = list(dict.fromkeys([*queries, *(a for phrases in anchors.values() for a in phrases)]))
    whole = predict(image, asked, min(threshold, tiling.floor))
    found = [
        answer
        for start in range(0, len(windows), TILES_PER_CALL)
        for answer in predict_tiles(
            [image.crop(tuple(w)) for w in windows[start : start + TILES_PER_CALL].tolist()],
            asked,
            tiling.floor,
        )
    ]
    merged = {}
    for index, text in enumerate(asked):
        proposals = [whole[index]] + [
            tile[index].offset(float(x1), float(y1)) for tile, (x1, y1, _, _) in zip(found, windows)
        ]
        merged[text] = merge(Candidates.concatenate(proposals), tiling.confident)
    places = {
        anchor: rerank(image, anchor, merged[anchor], tiling, predict_tiles)
        .with_min_score(tiling.floor)
        .top_k(ANCHOR_CANDIDATES)
        for anchor in set().union(*anchors.values())
    }
    results = []
    for query in queries:
        held = Candidates.concatenate([places[anchor] for anchor in anchors[query]])
        if len(held):
            results.append(around_anchors(image, query, held, tiling, predict_tiles))
        else:
            results.append(rerank(image, query, merged[query], tiling, predict_tiles))
    return results


def anchor_phrases(query: str) -> list[str]:
    """The phrases of the other things a query names beside its target ("the large cyan
    hexagon" of "the hexagon right of the large cyan hexagon"), by the event chunker."""
    from sceneloc.events import split_event  # it builds on sceneloc.api, which needs us

    event = split_event(query)
    return [participant.phrase for participant in event.participants[1:]]


def around_anchors(
    image: Image.Image,
    query: str,
    anchors: Candidates,
    tiling: Tiling,
    predict_tiles: PredictTiles,
) -> Candidates:
    """A query naming other things answered on a crop centred on each of their likely
    places, each answer scored by its own score times its anchor's: the target of a
    relation lies near its anchor, which a tile may have cut off."""
    width, height = image.size
    windows = [context_window(box, tiling.side, width, height) for box in anchors.boxes]
    answers = predict_tiles([image.crop(tuple(w)) for w in windows], [query], tiling.floor)
    found = Candidates.concatenate(
        [
            replace(answer, scores=answer.scores * score).offset(float(x1), float(y1))
            for (answer,), score, (x1, y1, _, _) in zip(answers, anchors.scores, windows)
        ]
    )
    return merge(found, tiling.confident).sorted()


def rerank(
    image: Image.Image,
    query: str,
    candidates: Candidates,
    tiling: Tiling,
    predict_tiles: PredictTiles,
) -> Candidates:
    """The best ``CONTEXT_CANDIDATES`` candidates, each scored by the query asked on a crop
    centred on it: the best crop answer's score times its IoU with the candidate, so a
    candidate the model picks once its neighbours are in view keeps its score and one
    it passes over for another thing loses it."""
    best = candidates.top_k(CONTEXT_CANDIDATES)
    if not len(best):
        return best
    width, height = image.size
    windows = [context_window(box, tiling.side, width, height) for box in best.boxes]
    crops = [image.crop(tuple(window)) for window in windows]
    answers = predict_tiles(crops, [query], tiling.floor)
    scores = []
    for box, (x1, y1, _, _), (answer,) in zip(best.boxes, windows, answers):
        moved = answer.offset(float(x1), float(y1))
        agreement = iou_matrix(box, moved.boxes).reshape(-1)
        scores.append(float((moved.scores * agreement).max(initial=0.0)))
    return Candidates(best.boxes, scores, best.labels, best.masks).sorted()
