"""Evaluating a describer: captions of reference regions scored against their references.

The references are samples (:mod:`sceneloc.data.format`): lines with the same ``image`` and
``box`` are one region's references, so RefCOCO, Flickr30k Entities, Visual Genome and the
synthetic ``descriptions.jsonl`` all serve. Each region gets one caption, from a loaded
:class:`~sceneloc.Describer` or from a predictions file (JSON Lines
``{"image", "box", "caption", "score"?}``, ``image`` as the references write it, ``box``
the region's, the two compared rounded to :data:`BOX_PRECISION` pixels).

Metrics: BLEU-1..4, CIDEr-D and METEOR (:mod:`sceneloc.evaluation.captions`); with a
listener (a :class:`~sceneloc.Grounder`), ``roundtrip@0.5``, the share of regions whose
caption, located on its image, comes back with IoU >= 0.5 (Mao et al. 2016); on synthetic data
(a ``scenes.jsonl`` of shapes beside the references), ``exact``, the share of captions the
scene's resolver maps to exactly the region (:mod:`sceneloc.data.synth.checking`).
``by_type`` scores each reference type on its own: the regions that have references of that
type, against those references only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sceneloc.boxes import Box
from sceneloc.data.format import Sample, parse_box, read_jsonl, read_samples, report_bad
from sceneloc.data.scenes import SCENES_FILE, read_scenes
from sceneloc.data.synth.checking import CheckedScene
from sceneloc.errors import DataFormatError, InvalidImageError, SceneLocError
from sceneloc.evaluation.captions import CaptionScorer
from sceneloc.evaluation.metrics import UNKNOWN, best_iou
from sceneloc.evaluation.runner import open_for_writing

if TYPE_CHECKING:  # the API imports torch and transformers; only types are needed here
    from sceneloc.api import Describer, Grounder

logger = logging.getLogger(__name__)

#: Boxes of predictions and regions are compared rounded to this many pixels.
BOX_PRECISION = 0.01
#: IoU a listener's box needs with the region for a round trip.
ROUNDTRIP_IOU = 0.5
#: Regions described per ``describe`` call by default.
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class Region:
    """One reference region: an image, a box and every reference describing it."""

    image: str
    box: Box
    references: tuple[str, ...]
    types: tuple[str, ...]
    split: str
    image_id: str | int | None = None

    def references_of(self, kind: str) -> list[str]:
        return [r for r, t in zip(self.references, self.types) if t == kind]


@dataclass(frozen=True)
class RegionCaption:
    """What the describer said of a region (``score``: its length-normalised log-probability,
    when the model gives one)."""

    caption: str
    score: float | None = None


#: A region as predictions and references are matched: its image and rounded box.
RegionKey = tuple[str, tuple[int, ...]]


def _box_key(image: str, box: Sequence[float]) -> RegionKey:
    return image, tuple(round(v / BOX_PRECISION) for v in box)


def read_regions(
    samples: Iterable[Sample], split: str | None = None, limit: int | None = None
) -> list[Region]:
    """The unique ``(image, box)`` regions of the samples (of ``split``, the first ``limit``),
    in the order they first appear, each with all its references; a no-target sample has
    no region."""
    found: dict[RegionKey, list[Sample]] = {}
    for sample in samples:
        if sample.box is not None and (split is None or sample.split == split):
            found.setdefault(_box_key(sample.image, sample.box), []).append(sample)
    return [
        Region(
            image=group[0].image,
            box=group[0].box,
            references=tuple(s.query for s in group),
            types=tuple(s.type or UNKNOWN for s in group),
            split=group[0].split,
            image_id=group[0].image_id,
        )
        for group in islice(found.values(), limit)
    ]


def parse_caption_prediction(record: Any) -> tuple[str, Box, RegionCaption]:
    """Validate one describe-predictions record; raises ``ValueError`` saying what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("a prediction must be a JSON object")
    missing = [name for name in ("image", "box", "caption") if name not in record]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    if not isinstance(record["image"], str) or not record["image"].strip():
        raise ValueError("'image' must be a non-empty string")
    if not isinstance(record["caption"], str):
        raise ValueError("'caption' must be a string")
    score = record.get("score")
    if score is not None and (not isinstance(score, int | float) or isinstance(score, bool)):
        raise ValueError("'score' must be a number or null")
    box = parse_box(record["box"], "box")
    return record["image"], box, RegionCaption(record["caption"], score)


def read_caption_predictions(path: str | Path) -> dict[RegionKey, RegionCaption]:
    """A describe-predictions file by region; a malformed line or a region given twice raises
    :class:`DataFormatError` naming the file and line."""
    path = Path(path)
    predictions: dict[RegionKey, RegionCaption] = {}
    lines: dict[RegionKey, int] = {}
    for number, record in read_jsonl(path):
        try:
            image, box, caption = parse_caption_prediction(record)
        except ValueError as exc:
            report_bad(path, number, str(exc), skip_bad=False)
            continue
        key = _box_key(image, box)
        if key in lines:
            report_bad(path, number, f"region {image} {box} again (first on line {lines[key]})",
                       skip_bad=False)  # fmt: skip
        lines[key] = number
        predictions[key] = caption
    return predictions


def _by_image(regions: Sequence[Region], batch_size: int) -> Iterable[list[int]]:
    """Indices of the regions, grouped by image (in order of first appearance), at most
    ``batch_size`` a group."""
    images: dict[str, list[int]] = {}
    for index, region in enumerate(regions):
        images.setdefault(region.image, []).append(index)
    for indices in images.values():
        for start in range(0, len(indices), batch_size):
            yield indices[start : start + batch_size]


def _image_path(region: Region, root: Path) -> Path:
    path = Path(region.image)
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise InvalidImageError(f"image not found: {path}")
    return path


@dataclass
class DescribeResult:
    """The captions of one describe evaluation and their metrics (``to_dict()``: the JSON
    ``sceneloc evaluate --task describe --json`` prints)."""

    regions: list[Region]
    captions: list[RegionCaption]
    source: str = ""
    exact: list[bool] | None = None
    roundtrip: list[bool] | None = None
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.regions)

    def _summary(
        self, score: CaptionScorer, chosen: list[int], references: list[list[str]]
    ) -> dict[str, Any]:
        summary: dict[str, Any] = {"n": len(chosen)}
        summary.update(score([self.captions[i].caption for i in chosen], references))
        for name, values in ((f"roundtrip@{ROUNDTRIP_IOU}", self.roundtrip),
                             ("exact", self.exact)):  # fmt: skip
            if values is not None:
                summary[name] = float(np.mean([values[i] for i in chosen]))
        return summary

    def compute(self, meteor: bool = True) -> dict[str, Any]:
        """Score the captions (overall and ``by_type``); kept in ``metrics``."""
        everything = list(range(self.n))
        with CaptionScorer(meteor) as score:
            metrics = self._summary(score, everything, [list(r.references) for r in self.regions])
            by_type = {}
            for kind in sorted({t for r in self.regions for t in r.types}):
                chosen = [i for i in everything if kind in self.regions[i].types]
                references = [self.regions[i].references_of(kind) for i in chosen]
                by_type[kind] = self._summary(score, chosen, references)
        metrics["by_type"] = by_type
        metrics["seconds_per_region"] = self.seconds / self.n if self.n else None
        self.metrics = metrics
        return metrics

    def to_dict(self) -> dict[str, Any]:
        return self.metrics or self.compute()

    def prediction_records(self) -> Iterable[dict[str, Any]]:
        """The predictions-file lines, one per region (floats kept exact)."""
        for region, caption in zip(self.regions, self.captions):
            yield {"image": region.image, "box": region.box, "caption": caption.caption,
                   "score": caption.score}  # fmt: skip


def _describe(
    describer: Describer,
    regions: Sequence[Region],
    root: Path,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> list[RegionCaption]:
    captions = [RegionCaption("")] * len(regions)
    for indices in _by_image(regions, batch_size):
        path = _image_path(regions[indices[0]], root)
        answer = describer.describe(path, [regions[i].box for i in indices])
        if len(answer) != len(indices):
            raise SceneLocError(f"{describer.name} described {len(answer)} of {len(indices)} boxes")
        for index, described in zip(indices, answer):
            captions[index] = RegionCaption(described.caption, described.score)
        if progress is not None:
            progress(len(indices))
    return captions


def _from_file(
    predictions: str | Path | Mapping[RegionKey, RegionCaption],
    regions: Sequence[Region],
    every_region: bool,
) -> list[RegionCaption]:
    """The caption of each region; predictions of other regions are logged when
    ``every_region`` of the data is evaluated (a split or a limit leaves some out)."""
    where = str(predictions) if isinstance(predictions, str | Path) else "the predictions"
    if isinstance(predictions, str | Path):
        predictions = read_caption_predictions(predictions)
    keys = [_box_key(r.image, r.box) for r in regions]
    missing = [r for r, key in zip(regions, keys) if key not in predictions]
    if missing:
        first = missing[0]
        raise DataFormatError(
            f"{where}: no caption for {len(missing)} of {len(regions)} regions "
            f"(first: {first.image} {first.box})"
        )
    unmatched = len(predictions) - len(set(keys))
    if unmatched and every_region:
        logger.warning("%d prediction(s) are of regions not in the data", unmatched)
    return [predictions[key] for key in keys]


def _round_trips(
    listener: Grounder,
    regions: Sequence[Region],
    captions: Sequence[RegionCaption],
    root: Path,
    batch_size: int,
) -> list[bool]:
    """Whether the listener locates each caption back on its region (IoU >= 0.5); a blank
    caption never does."""
    found = [False] * len(regions)
    for indices in _by_image(regions, batch_size):
        asked = [i for i in indices if captions[i].caption.strip()]
        if not asked:
            continue
        path = _image_path(regions[asked[0]], root)
        answer = listener.locate(path, [captions[i].caption for i in asked], threshold=0.0, top_k=1)
        for index, result in zip(asked, answer):
            found[index] = best_iou(result.box, [regions[index].box]) >= ROUNDTRIP_IOU
    return found


def _exact(
    scenes_file: Path,
    regions: Sequence[Region],
    captions: Sequence[RegionCaption],
    root: Path,
) -> list[bool] | None:
    """Whether each caption picks out its region alone; ``None`` when the scenes are not
    synthetic ones. A region's scene is found by its image id, else its image path."""
    scenes = read_scenes(scenes_file)
    checked: dict[str, CheckedScene | None] = {}
    exact = []
    for region, caption in zip(regions, captions):
        record = scenes.find(region.image_id, root / region.image)
        if record is None:
            raise DataFormatError(f"{scenes_file}: no scene of {region.image}")
        if record.image not in checked:
            checked[record.image] = CheckedScene.from_record(record)
        scene = checked[record.image]
        if scene is None:
            logger.info("%s does not list synthetic shapes: no exact check", scenes_file)
            return None
        try:
            exact.append(scene.is_exact(caption.caption, region.box))
        except ValueError as exc:
            raise DataFormatError(f"{scenes_file}: {region.image}: {exc}") from None
    return exact


def evaluate_describer(
    data: str | Path,
    source: Describer | str | Path | Mapping[RegionKey, RegionCaption],
    *,
    listener: Grounder | None = None,
    scenes: str | Path | None = None,
    split: str | None = None,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    meteor: bool = True,
    save_predictions: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> DescribeResult:
    """Caption every reference region of ``data`` (of ``split``; the first ``limit``) and
    score the captions.

    ``source`` is a loaded :class:`~sceneloc.Describer` or a predictions file (or its
    mapping from :func:`read_caption_predictions`); a region without a prediction raises
    :class:`DataFormatError`, predictions of other regions are logged and ignored.
    ``listener`` adds ``roundtrip@0.5``; synthetic ``scenes`` (default: the ``scenes.jsonl``
    beside ``data``, if any) add ``exact``. ``meteor=False`` skips METEOR (a JVM, slow to
    start). ``save_predictions`` writes the captions as a predictions file; ``progress`` is
    called with the number of regions described after each image.
    """
    data = Path(data)
    root = data.parent
    regions = read_regions(read_samples(data), split, limit)
    if not regions:
        chosen = f" of split {split!r}" if split is not None else ""
        raise DataFormatError(f"no regions{chosen} to evaluate in {data}")
    started = time.perf_counter()
    if isinstance(source, str | Path | Mapping):
        captions = _from_file(source, regions, split is None and limit is None)
        if progress is not None:
            progress(len(regions))
        name = str(source) if isinstance(source, str | Path) else "predictions"
    else:
        captions = _describe(source, regions, root, batch_size, progress)
        name = source.name
    seconds = time.perf_counter() - started
    result = DescribeResult(regions, captions, source=name, seconds=seconds)
    if save_predictions is not None:
        _write_predictions(Path(save_predictions), result)
    if listener is not None:
        result.roundtrip = _round_trips(listener, regions, captions, root, batch_size)
    scenes_file = Path(scenes) if scenes is not None else root / SCENES_FILE
    if scenes is not None or scenes_file.is_file():
        result.exact = _exact(scenes_file, regions, captions, root)
    result.compute(meteor)
    return result


def _write_predictions(path: Path, result: DescribeResult) -> None:
    with open_for_writing(path) as out:
        out.writelines(json.dumps(record) + "\n" for record in result.prediction_records())
