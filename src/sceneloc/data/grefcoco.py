"""gRefCOCO (generalised referring expressions: several targets, or none) as grounding samples.

The layout (github.com/henghuiding/gRefCOCO), beside RefCOCO's::

    <root>/grefs(unc).json     a JSON list of refs
    <root>/instances.json      COCO-style images, annotations, categories

A ref is RefCOCO's but for ``ann_id``, a list of COCO annotation ids (``[-1]`` in the
published file when there is none), and ``no_target``, true when the sentences describe
nothing in the image. Each sentence becomes one sample: ``id`` ``"<ref_id>-<sent_id>"``,
``query`` the sentence, ``boxes`` every target's box (``[]`` and ``box`` ``null`` for a
no-target ref; else ``box`` the first), ``split`` the ref's (train, val, testA, testB),
``category`` the first target's COCO category and ``image_id`` the COCO image id. Images
are named as in ``instances.json`` (else ``COCO_train2014_%012d.jpg``), under ``images``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sceneloc.data.coco import CocoIndex
from sceneloc.data.convert import (
    ConversionStats,
    load_json,
    log_summary,
    require_dir,
)
from sceneloc.data.format import Sample
from sceneloc.data.refcoco import image_file, ref_annotation, ref_samples
from sceneloc.errors import DataFormatError

REFS_FILE = "grefs({}).json"


def convert_grefcoco(
    root: str | Path,
    images: str | Path,
    split: str = "val",
    split_by: str = "unc",
    *,
    relative_to: str | Path | None = None,
    skip_bad: bool = False,
    stats: ConversionStats | None = None,
) -> Iterator[Sample]:
    """Stream one sample per sentence of the refs in ``split`` (``"all"``: every split).

    Malformed refs raise :class:`DataFormatError` naming the file and ref, or with
    ``skip_bad`` are logged and counted in ``stats``.
    """
    stats = stats if stats is not None else ConversionStats()
    root, images = Path(root), Path(images)
    relative_to = Path(relative_to) if relative_to is not None else None
    require_dir(root, "gRefCOCO folder")
    require_dir(images, "image folder")
    refs_path = root / REFS_FILE.format(split_by)
    refs = load_json(refs_path, "gRefCOCO refs file")
    if not isinstance(refs, list):
        raise DataFormatError(f"{refs_path}: a refs file must hold a list of refs")
    index = CocoIndex(root / "instances.json", skip_bad, stats)
    annotations = index.annotations_by_id()
    yield from ref_samples(
        refs, split, refs_path, lambda ref: _targets(ref, index, annotations),
        images, relative_to, skip_bad, stats,
    )  # fmt: skip
    log_summary(f"{refs_path} ({split})", stats)


def _targets(
    ref: dict[str, Any], index: CocoIndex, annotations: dict[Any, Any]
) -> tuple[str, list[list[float]], str | None]:
    """The image file, every target box and the first target's category of a ref;
    ``ValueError`` when it is malformed."""
    ids = ref["ann_id"] if isinstance(ref["ann_id"], list) else [ref["ann_id"]]
    no_target = ref.get("no_target", False)
    if not isinstance(no_target, bool):
        raise ValueError("'no_target' must be true or false")
    ids = [] if no_target else [i for i in ids if i != -1]
    if not no_target and not ids:
        raise ValueError("no target annotation, and 'no_target' is not set")
    found = [ref_annotation(i, ref["image_id"], index, annotations) for i in ids]
    category = index.categories[found[0].category_id] if found else None
    return image_file(index, ref["image_id"]), [a.box for a in found], category
