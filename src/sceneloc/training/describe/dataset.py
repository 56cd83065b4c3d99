"""Training data for the describer: regions grouped by image, their references, batches.

Samples with the same image and box are one region's references. An item is an image
with all its regions, so each image is encoded once per step however many regions it has.
On synthetic scenes (a ``scenes.jsonl`` from the generator beside the samples) every object
and planted group is a region too, each with the one caption of
:mod:`~sceneloc.training.describe.references`: many regions per image where the samples
give a handful.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from sceneloc.boxes import Box
from sceneloc.data.format import Sample
from sceneloc.data.scenes import Scenes
from sceneloc.data.synth.checking import CheckedScene
from sceneloc.native.describer import BOS_TOKEN, EOS_TOKEN, DescriberConfig
from sceneloc.training.describe.references import canonical_wording, scene_regions
from sceneloc.training.native.dataset import (
    Collator,
    GroundingDataset,
    ImageGroup,
    mirror_query,
    object_targets,
)


@dataclass
class RegionGroup:
    """One image and its regions: pixel boxes, each with one or more references; the first
    ``asked`` are the samples' own (the others: a scene's further objects)."""

    path: Path
    image_id: str | None
    boxes: list[Box] = field(default_factory=list)
    references: list[list[str]] = field(default_factory=list)
    asked: int = 0

    def add(self, box: Box, references: list[str]) -> None:
        key = tuple(box)
        for index, known in enumerate(self.boxes):
            if tuple(known) == key:
                self.references[index] = list(dict.fromkeys(self.references[index] + references))
                return
        self.boxes.append(list(box))
        self.references.append(list(dict.fromkeys(references)))


def region_groups(
    samples: Iterable[Sample],
    root: Path,
    scenes: Scenes | None = None,
    every_object: bool = True,
) -> list[RegionGroup]:
    """The regions of each image, in first-seen order. With synthetic ``scenes``, a sample's
    region gets its canonical caption (its own words, canonically, when it has none) and,
    with ``every_object``, each scene's objects and planted groups become regions as well."""
    groups: dict[Path, RegionGroup] = {}
    captions: dict[Path, dict[tuple[float, ...], str]] = {}
    for sample in samples:
        if sample.box is None:  # a description of nothing there has no region to describe
            continue
        path = sample.image_path(root)
        image_id = None if sample.image_id is None else str(sample.image_id)
        group = groups.setdefault(path, RegionGroup(path, image_id))
        if path not in captions:
            record = scenes.find(image_id, path) if scenes is not None else None
            checked = CheckedScene.from_record(record) if record is not None else None
            captions[path] = scene_regions(checked) if checked is not None else {}
        if not captions[path]:
            group.add(sample.box, [sample.query])
            continue
        caption = captions[path].get(tuple(sample.box))
        group.add(sample.box, [caption or canonical_wording(sample.query)])
    for group in groups.values():
        group.asked = len(group.boxes)
    if every_object:
        for path, group in groups.items():
            known = {tuple(box) for box in group.boxes}
            for box, caption in captions[path].items():
                if box not in known:
                    group.add(list(box), [caption])
    return list(groups.values())


class RegionDataset(GroundingDataset):
    """Items are images with their regions (normalised ``x1, y1, x2, y2``) and one reference
    per region, drawn afresh each epoch; flips mirror the words ("left" <-> "right").
    ``regions_per_image`` caps the regions of an item: the samples' own first, then others
    drawn at random, so that a step's time goes to more images rather than to more regions
    of the same few.

    Images, caching, flips and the attribute targets of ``scenes`` are the grounder's
    (:class:`~sceneloc.training.native.dataset.GroundingDataset`)."""

    def __init__(
        self,
        regions: list[RegionGroup],
        image_size: int,
        seed: int = 0,
        augment: bool = True,
        cache_images: bool = False,
        scenes: Scenes | None = None,
        attributes: dict[str, list[str]] | None = None,
        regions_per_image: int | None = None,
    ) -> None:
        images = [ImageGroup(group.path, group.image_id) for group in regions]
        super().__init__(
            images, image_size, seed=seed, augment=augment, cache_images=cache_images,
            scenes=scenes, attributes=attributes,
        )  # fmt: skip
        self.regions = regions
        self.regions_per_image = regions_per_image

    def __getitem__(self, index: int) -> dict[str, Any]:
        group = self.regions[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        pixels, (width, height) = self._pixels(index)
        scale = np.array([width, height, width, height], dtype=np.float64)
        chosen = self._chosen(group, rng)
        boxes = (np.asarray(group.boxes, dtype=np.float64)[chosen] / scale).clip(0, 1)
        captions = [
            refs[int(rng.integers(len(refs)))] for refs in (group.references[i] for i in chosen)
        ]
        objects = self._objects(index)
        if self.augment and rng.random() < 0.5:
            pixels = pixels[:, :, ::-1].copy()
            boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)
            captions = [mirror_query(caption) for caption in captions]
            objects = [[1.0 - cx, *rest] for cx, *rest in objects]
        item = {"pixels": pixels, "boxes": boxes.tolist(), "captions": captions}
        if self.scenes is not None:
            item["objects"] = objects
        return item

    def _chosen(self, group: RegionGroup, rng: np.random.Generator) -> list[int]:
        count, most = len(group.boxes), self.regions_per_image
        if most is None or count <= most:
            return list(range(count))
        asked = list(range(min(group.asked, most)))
        others = rng.permutation(np.arange(len(asked), count))[: most - len(asked)]
        return asked + sorted(int(i) for i in others)

    def _objects(self, index: int) -> list[list[float]]:
        if self.scenes is None:
            return []
        return object_targets(self._scene(self.groups[index]), self.attributes)


def caption_ids(
    tokenizer: PreTrainedTokenizerBase, captions: list[str], max_length: int
) -> torch.Tensor:
    """``(captions, length)``: ``[BOS]``, the words (at most ``max_length``), ``[EOS]``, padded
    with 0."""
    bos, eos = tokenizer.convert_tokens_to_ids([BOS_TOKEN, EOS_TOKEN])
    rows = [
        [bos, *ids[:max_length], eos]
        for ids in tokenizer(captions, add_special_tokens=False)["input_ids"]
    ]
    table = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    for row, ids in enumerate(rows):
        table[row, : len(ids)] = torch.tensor(ids)
    return table


class RegionCollator(Collator):
    """Stack images, flatten their regions and captions; ``image_index`` maps region to
    image; objects as the grounder's collator pads them."""

    config: DescriberConfig  # type: ignore[assignment]

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {
            "pixel_values": torch.from_numpy(np.stack([item["pixels"] for item in items])),
            "boxes": torch.tensor(
                [box for item in items for box in item["boxes"]], dtype=torch.float32
            ),
            "image_index": torch.tensor(
                [i for i, item in enumerate(items) for _ in item["boxes"]], dtype=torch.long
            ),
            "caption_ids": caption_ids(
                self.tokenizer,
                [caption for item in items for caption in item["captions"]],
                self.config.max_caption_length,
            ),
        }
        if "objects" in items[0]:
            batch["object_boxes"], batch["object_labels"] = self._objects(items)
        return batch
