"""A query's candidates as arrays: boxes, scores and labels, with the operations tiling needs.

:class:`Candidates` holds ``n x 4`` float boxes (``[x1, y1, x2, y2]`` pixels), ``n`` scores
and ``n`` labels (the text span each box matched). Every operation returns a new object, so
a result's candidates are never changed behind its back. Iterating gives one
:class:`Candidate` per box, for code that reads better one guess at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from sceneloc import boxes as geometry
from sceneloc.boxes import Box, OverlapMetric
from sceneloc.errors import SceneLocError

if TYPE_CHECKING:
    import supervision


@dataclass(frozen=True)
class Candidate:
    """One guess for a query: a box, its score and the text span it matched."""

    box: Box
    score: float
    label: str


@dataclass(frozen=True, eq=False)
class Candidates:
    """The candidates of one query, as arrays of equal length (see the module docstring)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(self.labels, dtype=object).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"{len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels: "
                "each candidate needs one of each"
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=object))

    @classmethod
    def of(cls, boxes: Any, scores: Any, label: str) -> Candidates:
        """Boxes and scores (arrays, tensors on any device, lists) that all matched ``label``."""
        boxes, scores = _to_numpy(boxes), _to_numpy(scores)
        return cls(boxes, scores, np.full(len(scores), label, dtype=object))

    @classmethod
    def from_list(cls, candidates: Iterable[Candidate]) -> Candidates:
        items = list(candidates)
        if not items:
            return cls.empty()
        return cls([c.box for c in items], [c.score for c in items], [c.label for c in items])

    @classmethod
    def concatenate(cls, parts: Iterable[Candidates]) -> Candidates:
        """All the candidates of ``parts`` in one object, in the order given."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
        )

    # --- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[Candidate]:
        for box, score, label in zip(self.boxes.tolist(), self.scores.tolist(), self.labels):
            yield Candidate(box, score, label)

    def __getitem__(self, index: Any) -> Any:
        """An integer gives one :class:`Candidate`; a slice, mask or index array a subset."""
        if isinstance(index, int | np.integer):
            return Candidate(
                self.boxes[index].tolist(), float(self.scores[index]), self.labels[index]
            )
        return Candidates(self.boxes[index], self.scores[index], self.labels[index])

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
        union, keeping its own score and label. ``ios`` (intersection over the smaller box)
        joins the part of an object a tile cut off to the whole object another tile saw.
        """
        labels = self.labels if per_label else None
        groups = geometry.greedy_groups(self.boxes, self.scores, threshold, metric, labels)
        leaders = [group[0] for group in groups]
        return Candidates(
            [geometry.union_box(self.boxes[group]) for group in groups] or np.zeros((0, 4)),
            self.scores[leaders],
            self.labels[leaders],
        )

    # --- moving -------------------------------------------------------------------------------

    def offset(self, dx: float, dy: float) -> Candidates:
        """Boxes shifted by ``(dx, dy)``: from a tile's pixels to the whole image's."""
        return Candidates(self.boxes + np.array([dx, dy, dx, dy]), self.scores, self.labels)

    def inside(self, width: int, height: int) -> Candidates:
        """Only the boxes that overlap a ``width x height`` image with a positive area."""
        return self[geometry.inside(self.boxes, width, height)]

    def clipped(self, width: int, height: int) -> Candidates:
        """Boxes cut to a ``width x height`` image."""
        return Candidates(geometry.clip(self.boxes, width, height), self.scores, self.labels)

    # --- using --------------------------------------------------------------------------------

    def crop(self, image: Image.Image, index: int = 0) -> Image.Image:
        """The region of candidate ``index`` in ``image``, at least one pixel each way."""
        x1, y1, x2, y2 = self.boxes[index].tolist()
        return image.crop(
            (int(x1), int(y1), max(int(x1) + 1, round(x2)), max(int(y1) + 1, round(y2)))
        )

    def to_coco(self, image_id: int | str, category_id: int) -> list[dict[str, Any]]:
        """COCO-style detection results: ``bbox`` is ``[x, y, width, height]``."""
        return [
            {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}
            for bbox, score in zip(geometry.xyxy_to_xywh(self.boxes).tolist(), self.scores.tolist())
        ]

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
            confidence=self.scores.copy(),
            data={"class_name": self.labels.astype(str)},
        )


def _to_numpy(values: Any) -> np.ndarray:
    """A float64 numpy copy of an array, a list or a tensor (any device or dtype)."""
    if hasattr(values, "detach"):  # a torch tensor: no import of torch needed to read it
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64)
