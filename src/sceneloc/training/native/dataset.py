"""Training data for the native model: samples grouped by image, negatives, flips, batches.

A batch holds a few images and all their queries, so each image is encoded once per step
however many queries refer to it (RefCOCO images carry several expressions, synthetic
scenes several). What the data says beyond one box per query (every object of a scene file,
what a query says of them, which queries are certainly absent) comes from
:mod:`sceneloc.data.scenes` and the strategies of :mod:`~sceneloc.training.native.queries`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from sceneloc.data.format import Sample
from sceneloc.data.scenes import SceneRecord, Scenes
from sceneloc.errors import DataFormatError, SceneLocError
from sceneloc.images import load_image
from sceneloc.native.config import NativeConfig
from sceneloc.native.processing import resize, to_normalized, tokenize

logger = logging.getLogger(__name__)

#: Words swapped when an image is flipped left-right, so the query stays true.
MIRRORED = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost"}
#: The words :data:`MIRRORED` swaps: a query holding one is about left and right.
SIDE_WORDS = re.compile(r"\b(" + "|".join(MIRRORED) + r")\b", re.IGNORECASE)


def mirror_query(query: str) -> str:
    """The query that is true of the left-right mirrored image."""
    return SIDE_WORDS.sub(lambda m: MIRRORED[m.group(0).lower()], query)


@dataclass
class ImageGroup:
    """One image and the queries that refer into it: per query its box (``None``: it
    describes nothing there) and every target box (pixels)."""

    path: Path
    image_id: str | None
    queries: list[str] = field(default_factory=list)
    boxes: list[list[float] | None] = field(default_factory=list)
    targets: list[list[list[float]]] = field(default_factory=list)


def group_by_image(samples: Iterable[Sample], root: Path) -> list[ImageGroup]:
    """Group samples by image, in first-seen order."""
    groups: dict[Path, ImageGroup] = {}
    for sample in samples:
        path = sample.image_path(root)
        image_id = None if sample.image_id is None else str(sample.image_id)
        group = groups.setdefault(path, ImageGroup(path, image_id))
        group.queries.append(sample.query)
        group.boxes.append(sample.box)
        group.targets.append(sample.targets)
    return list(groups.values())


@dataclass
class QueryLabels:
    """Per query, for the model's spatial reasoning: 1/0 per object of the image for "fits
    the referent's description", and the anchor's normalised centre (``None``: not known)."""

    fits: list[float] | None = None
    anchor: list[float] | None = None


class QueryLabeller(Protocol):
    """What a query says about its image's objects: which of them fit the description of
    its referent ("the second *star* from the left": every star) and where the thing it
    places its referent relative to is ("the circle left of *the blue square*"); empty
    labels for what it cannot tell."""

    def __call__(self, scene: SceneRecord, query: str) -> QueryLabels: ...


class AbsentSampler(Protocol):
    """Queries whose referent is certainly not in an image, to teach the presence head."""

    def sample(self, group: ImageGroup, rng: np.random.Generator) -> str | None:
        """One such query for the image; ``None`` when there is none to ask this time."""
        ...


#: Label of an attribute the loss ignores (PyTorch's ``ignore_index`` default).
IGNORE = -100


def object_targets(
    scene: SceneRecord | None, attributes: dict[str, list[str]]
) -> list[list[float]]:
    """``[cx, cy, w, h, class of each attribute...]`` per object of the scene, the box
    normalised; an attribute the object lacks (or a value outside ``attributes``) is
    :data:`IGNORE`. Every object is labelled: one of a held-out colour-shape pair gets its
    colour and its shape separately, while no query, absent ones included, names the pair."""
    if scene is None:
        return []
    rows = []
    for obj in scene.objects:
        labels = [
            values.index(obj.attributes[name]) if obj.attributes.get(name) in values else IGNORE
            for name, values in attributes.items()
        ]
        rows.append([*to_normalized(list(obj.box), scene.width, scene.height), *labels])
    return rows


class GroundingDataset(torch.utils.data.Dataset):
    """Items are images with their queries; randomness is fixed by (seed, epoch, index).

    With ``scenes`` and ``attributes``, items also carry every object's box and attribute
    targets, and per query what ``labeller`` says of it (nothing without one). ``absent``
    adds queries whose referent is not in the image, ``absent_fraction`` of them per query.
    """

    def __init__(
        self,
        groups: list[ImageGroup],
        image_size: int,
        seed: int = 0,
        augment: bool = True,
        absent: AbsentSampler | None = None,
        absent_fraction: float = 0.0,
        cache_images: bool = False,
        scenes: Scenes | None = None,
        attributes: dict[str, list[str]] | None = None,
        labeller: QueryLabeller | None = None,
    ) -> None:
        self.groups = groups
        self.image_size = image_size
        self.seed = seed
        self.augment = augment
        self.absent = absent
        self.absent_fraction = absent_fraction
        self.scenes = scenes if attributes else None
        self.attributes = attributes or {}
        self.labeller = labeller
        self.cache: dict[int, tuple[np.ndarray, tuple[int, int]]] | None = (
            {} if cache_images else None
        )
        self.labels: dict[int, list[QueryLabels]] = {}
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.groups)

    def _scene(self, group: ImageGroup) -> SceneRecord | None:
        return self.scenes.find(group.image_id, group.path) if self.scenes else None

    def _label(self, scene: SceneRecord | None, query: str) -> QueryLabels:
        if scene is None or self.labeller is None:
            return QueryLabels()
        return self.labeller(scene, query)

    def _labels(self, index: int) -> list[QueryLabels]:
        """The image's own queries' labels, kept (resolving a query is not free)."""
        if index not in self.labels:
            group = self.groups[index]
            scene = self._scene(group)
            self.labels[index] = [self._label(scene, query) for query in group.queries]
        return list(self.labels[index])

    def _pixels(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        path = self.groups[index].path
        try:  # read as at inference: EXIF orientation, alpha on white, the pixel limit
            image = load_image(path).image
        except SceneLocError as exc:
            raise DataFormatError(f"training image: {exc}") from None
        loaded = resize(image, self.image_size), image.size
        if self.cache is not None:
            self.cache[index] = loaded
        return loaded

    def __getitem__(self, index: int) -> dict[str, Any]:
        group = self.groups[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        pixels, (width, height) = self._pixels(index)
        queries = list(group.queries)
        nowhere = [0.5, 0.5, 1.0, 1.0]  # the box of a query whose referent is absent
        boxes = [nowhere if box is None else to_normalized(box, width, height)
                 for box in group.boxes]  # fmt: skip
        targets = [[to_normalized(box, width, height) for box in boxes_of_query]
                   for boxes_of_query in group.targets]  # fmt: skip
        present = [1.0 if box is not None else 0.0 for box in group.boxes]
        if self.absent is not None and self.absent_fraction > 0:
            for _ in range(rng.binomial(len(group.queries), self.absent_fraction)):
                query = self.absent.sample(group, rng)
                if query is not None:
                    queries.append(query)
                    boxes.append(nowhere)
                    targets.append([])
                    present.append(0.0)
        item = {"queries": queries, "boxes": boxes, "targets": targets, "present": present}
        if self.scenes is not None:
            scene = self._scene(group)
            item["objects"] = object_targets(scene, self.attributes)
            item["labels"] = self._labels(index) + [
                self._label(scene, query) for query in queries[len(group.queries) :]
            ]
        if self.augment and rng.random() < 0.5:
            pixels = pixels[:, :, ::-1].copy()
            item["queries"] = [mirror_query(q) for q in queries]
            item["boxes"] = [[1.0 - cx, cy, w, h] for cx, cy, w, h in boxes]
            item["targets"] = [[[1.0 - cx, cy, w, h] for cx, cy, w, h in query_targets]
                               for query_targets in targets]  # fmt: skip
            if "objects" in item:
                item["objects"] = [[1.0 - cx, *rest] for cx, *rest in item["objects"]]
                item["labels"] = [
                    QueryLabels(
                        labels.fits, labels.anchor and [1 - labels.anchor[0], labels.anchor[1]]
                    )
                    for labels in item["labels"]
                ]
        return {"pixels": pixels, **item}


class Collator:
    """Stack images, flatten their queries, tokenize; ``image_index`` maps query to image."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: NativeConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        queries = [q for item in items for q in item["queries"]]
        text = tokenize(self.tokenizer, queries, self.config)
        batch = {
            "pixel_values": torch.from_numpy(np.stack([item["pixels"] for item in items])),
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "image_index": torch.tensor(
                [i for i, item in enumerate(items) for _ in item["queries"]], dtype=torch.long
            ),
            "boxes": torch.tensor(
                [b for item in items for b in item["boxes"]], dtype=torch.float32
            ),
            "present": torch.tensor([p for item in items for p in item["present"]]),
            "target_boxes": self._targets(items),
        }
        if "objects" in items[0]:
            batch["object_boxes"], batch["object_labels"] = self._objects(items)
            batch["target_fits"], batch["anchor_centers"] = self._query_labels(items)
        return batch

    @staticmethod
    def _targets(items: list[dict[str, Any]]) -> torch.Tensor:
        """Every query's target boxes ``(queries, k, 4)``, rows of -1 past its last."""
        targets = [query for item in items for query in item["targets"]]
        table = torch.full((len(targets), max(1, *map(len, targets)), 4), -1.0)
        for row, boxes in enumerate(targets):
            if boxes:
                table[row, : len(boxes)] = torch.tensor(boxes)
        return table

    @staticmethod
    def _query_labels(items: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per query: fits ``(queries, m)`` over its image's objects and the anchor's centre
        ``(queries, 2)``; -1 where not known (and past an image's last object)."""
        labels = [labels for item in items for labels in item["labels"]]
        most = max(1, *(len(item["objects"]) for item in items))
        fits = torch.full((len(labels), most), -1.0)
        for row, query in enumerate(labels):
            if query.fits:
                fits[row, : len(query.fits)] = torch.tensor(query.fits)
        anchors = torch.tensor([query.anchor or [-1.0, -1.0] for query in labels])
        return fits, anchors

    def _objects(self, items: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Objects padded to the busiest image: boxes ``(b, m, 4)``, labels ``(b, m, k)``."""
        most = max(1, *(len(item["objects"]) for item in items))
        width = 4 + len(self.config.object_attributes or {})
        table = torch.full((len(items), most, width), float(IGNORE))
        for row, item in enumerate(items):
            if item["objects"]:
                table[row, : len(item["objects"])] = torch.tensor(item["objects"])
        return table[..., :4].clamp(0, 1), table[..., 4:].long()
