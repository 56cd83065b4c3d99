"""A query's candidates as arrays: boxes, scores and labels, with the operations tiling needs.

:class:`Candidates` holds ``n x 4`` float boxes (``[x1, y1, x2, y2]`` pixels), ``n`` scores
and ``n`` labels (the text span each box matched), and, from models that segment, ``n``
masks (``n x H x W`` bool, the size of the image the boxes refer to). Masks follow every
selection (index, filter, sort, top-k, NMS); :meth:`Candidates.offset` and
:meth:`Candidates.concatenate` say what becomes of them when tiles are joined. Every
operation returns a new object, so a result's candidates are never changed behind its
back. Iterating gives one :class:`Candidate` per box, for code that reads better one guess
at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from sceneloc import boxes as geometry
from sceneloc import masks as segmentation
from sceneloc.boxes import Box, OverlapMetric
from sceneloc.errors import SceneLocError

if TYPE_CHECKING:
    import supervision


@dataclass(frozen=True)
class Candidate:
    """One guess for a query: a box, its score, the text span it matched and, from models
    that segment, its ``H x W`` bool mask."""

    box: Box
    score: float
    label: str
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, eq=False)
class Candidates:
    """The candidates of one query, as arrays of equal length (see the module docstring)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    #: ``n x H x W`` bool, image-sized, or ``None`` from models that give boxes only.
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(self.labels, dtype=object).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"{len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels: "
                "each candidate needs one of each"
            )
        if self.masks is not None:
            masks = np.asarray(self.masks, dtype=bool)
            if masks.ndim != 3 or len(masks) != len(boxes):
                raise ValueError(
                    f"masks of shape {masks.shape} for {len(boxes)} boxes: "
                    "masks are n x height x width, one per candidate"
                )
            object.__setattr__(self, "masks", masks)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=object))

    @classmethod
    def of(cls, boxes: Any, scores: Any, label: str, masks: Any = None) -> Candidates:
        """Boxes and scores (arrays, tensors on any device, lists) that all matched ``label``,
        and their masks if the model gives them."""
        boxes, scores = _to_numpy(boxes), _to_numpy(scores)
        if masks is not None and hasattr(masks, "detach"):
            masks = masks.detach().bool().cpu().numpy()
        return cls(boxes, scores, np.full(len(scores), label, dtype=object), masks)

    @classmethod
    def from_list(cls, candidates: Iterable[Candidate]) -> Candidates:
        """Candidates of the given ones; their masks are kept if every one has a mask."""
        items = list(candidates)
        if not items:
            return cls.empty()
        masks = [c.mask for c in items]
        return cls(
            [c.box for c in items],
            [c.score for c in items],
            [c.label for c in items],
            None if any(m is None for m in masks) else np.stack(masks),
        )

    @classmethod
    def concatenate(cls, parts: Iterable[Candidates]) -> Candidates:
        """All the candidates of ``parts`` in one object, in the order given.

        Masks are kept when every part with candidates has masks of one image size (tiles
        first :meth:`offset` into the whole image); otherwise the result has none.
        """
        parts = list(parts)
        if not parts:
            return cls.empty()
        shaped = {p.masks.shape[1:] if p.masks is not None else None for p in parts if len(p)}
        masks = None
        if len(shaped) == 1 and None not in shaped:
            (size,) = shaped
            masks = np.concatenate(
                [p.masks if len(p) else np.zeros((0, *size), bool) for p in parts]
            )
        return cls(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
            masks,
        )

    # --- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[Candidate]:
        for index in range(len(self)):
            yield self[index]

    def __getitem__(self, index: Any) -> Any:
        """An integer gives one :class:`Candidate`; a slice, mask or index array a subset."""
        masks = self.masks
        if isinstance(index, int | np.integer):
            return Candidate(
                self.boxes[index].tolist(),
                float(self.scores[index]),
                self.labels[index],
                None if masks is None else masks[index],
            )
        subset = None if masks is None else masks[index]
        return Candidates(self.boxes[index], self.scores[index], self.labels[index], subset)

    def __repr__(self) -> str:
        best = f", best score {self.scores.max():.3g}" if len(self) else ""
        return f"Candidates({len(self)} boxes{best})"

    @property
    def area(self) -> np.ndarray:
        """Each box's area in square pixels."""
        return geometry.area(self.boxes)

    # --- selecting ----------------------------------------------------------------------------

    def with_min_score(self, threshold: float) -> Candidates:
        """Only the candidates scoring at least ``threshold``."""
        return self[self.scores >= threshold]

    def sorted(self) -> Candidates:
        """Best score first; equal scores keep their order."""
        return self[np.argsort(-self.scores, kind="stable")]

    def top_k(self, k: int) -> Candidates:
        """The ``k`` best, best first."""
        return self.sorted()[:k]

    def nms(self, iou_threshold: float = 0.5, per_label: bool = False) -> Candidates:
        """Non-maximum suppression, best first; ``per_label``: boxes compete within a label."""
        labels = self.labels if per_label else None
        return self[geometry.nms(self.boxes, self.scores, iou_threshold, labels)]

    def merge_overlapping(
        self, threshold: float = 0.5, metric: OverlapMetric = "ios", per_label: bool = False
    ) -> Candidates:
        """Fuse boxes that overlap into one, as when joining the answers of adjacent tiles.

        Greedy, best first (as SAHI's greedy non-maximum merging): the best remaining box
        takes every remaining box it overlaps by more than ``threshold`` and becomes their
        union, keeping its own score and label (and the union of their masks). ``ios``
        (intersection over the smaller box) joins the part of an object a tile cut off to
        the whole object another tile saw.
        """
        labels = self.labels if per_label else None
        groups = geometry.greedy_groups(self.boxes, self.scores, threshold, metric, labels)
        leaders = [group[0] for group in groups]
        masks = None
        if self.masks is not None:
            masks = np.zeros((len(groups), *self.masks.shape[1:]), dtype=bool)
            for merged, group in zip(masks, groups):
                np.logical_or.reduce(self.masks[group], axis=0, out=merged)
        return Candidates(
            [geometry.union_box(self.boxes[group]) for group in groups] or np.zeros((0, 4)),
            self.scores[leaders],
            self.labels[leaders],
            masks,
        )

    # --- moving -------------------------------------------------------------------------------

    def offset(self, dx: float, dy: float, image_size: tuple[int, int] | None = None) -> Candidates:
        """Boxes shifted by ``(dx, dy)``: from a tile's pixels to the whole image's.

        A mask is the size of the image its box refers to, so a tile's masks cannot simply
        move: with ``image_size`` (the whole image's ``(width, height)``) they are placed
        into it at ``(dx, dy)``, which must then be whole pixels; without it they are
        dropped and the candidates keep their boxes only.
        """
        masks = None
        if self.masks is not None and image_size is not None:
            if dx != int(dx) or dy != int(dy):
                raise ValueError(f"masks move by whole pixels only, not by ({dx}, {dy})")
            masks = segmentation.paste(self.masks, *image_size, int(dx), int(dy))
        return Candidates(self.boxes + np.array([dx, dy, dx, dy]), self.scores, self.labels, masks)

    def inside(self, width: int, height: int) -> Candidates:
        """Only the boxes that overlap a ``width x height`` image with a positive area."""
        return self[geometry.inside(self.boxes, width, height)]

    def clipped(self, width: int, height: int) -> Candidates:
        """Boxes cut to a ``width x height`` image (masks are that image's already)."""
        return Candidates(
            geometry.clip(self.boxes, width, height), self.scores, self.labels, self.masks
        )

    # --- using --------------------------------------------------------------------------------

    def crop(self, image: Image.Image, index: int = 0, masked: bool = False) -> Image.Image:
        """The region of candidate ``index`` in ``image``, at least one pixel each way.

        ``masked``: the cut-out instead, an RGBA image transparent outside the mask.
        """
        x1, y1, x2, y2 = self.boxes[index].tolist()
        region = (int(x1), int(y1), max(int(x1) + 1, round(x2)), max(int(y1) + 1, round(y2)))
        if not masked:
            return image.crop(region)
        if self.masks is None:
            raise SceneLocError("no masks to cut out with: this model gives boxes only")
        mask = self.masks[index]
        if mask.shape != (image.height, image.width):
            raise ValueError(f"a {mask.shape[1]}x{mask.shape[0]} mask for a {image.size} image")
        cut_out = image.convert("RGBA").crop(region)
        cut_out.putalpha(Image.fromarray(mask.astype(np.uint8) * 255).crop(region))
        return cut_out

    def to_coco(self, image_id: int | str, category_id: int) -> list[dict[str, Any]]:
        """COCO-style detection results: ``bbox`` is ``[x, y, width, height]``; with masks,
        ``segmentation`` is each one's compressed RLE, as COCO's segmentation results."""
        results = [
            {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}
            for bbox, score in zip(geometry.xyxy_to_xywh(self.boxes).tolist(), self.scores.tolist())
        ]
        if self.masks is not None:
            for result, mask in zip(results, self.masks):
                result["segmentation"] = segmentation.encode_rle(mask)
        return results

    def to_supervision(self) -> supervision.Detections:
        """These candidates as ``supervision.Detections``, labels under ``data["class_name"]``."""
        try:
            import supervision
        except ImportError:
            raise SceneLocError(
                "to_supervision() needs the supervision package: "
                "pip install 'sceneloc[supervision]'"
            ) from None
        return supervision.Detections(
            xyxy=self.boxes.copy(),
            mask=None if self.masks is None else self.masks.copy(),
            confidence=self.scores.copy(),
            data={"class_name": self.labels.astype(str)},
        )


def _to_numpy(values: Any) -> np.ndarray:
    """A float64 numpy copy of an array, a list or a tensor (any device or dtype)."""
    if hasattr(values, "detach"):  # a torch tensor: no import of torch needed to read it
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64)
