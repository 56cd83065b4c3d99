"""RefCOCO, RefCOCO+ and RefCOCOg in the ``refer`` layout, as grounding samples.

The layout (github.com/lichengunc/refer)::

    <refer_root>/<dataset>/refs(<split_by>).p   pickle: a list of ref dicts
    <refer_root>/<dataset>/instances.json       COCO-style images, annotations, categories

Each ref names a COCO annotation (``ann_id``) and holds several sentences; each sentence
becomes one sample: ``id`` ``"<ref_id>-<sent_id>"``, ``query`` the sentence (``sent``,
else ``raw``), ``box`` the annotation's ``[x, y, w, h]`` as ``[x, y, x + w, y + h]``,
``split`` the ref's split, ``category`` the COCO category's name and ``image_id`` the COCO
image id. Images are the COCO train2014 files under ``images``, named as in
``instances.json`` (``COCO_train2014_%012d.jpg`` when it does not say).

The refs file is a pickle, which can run code when loaded; it is read with an unpickler
that refuses every global, so only plain lists, dicts, strings and numbers load.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from sceneloc.boxes import Box
from sceneloc.data.coco import Annotation, CocoIndex
from sceneloc.data.convert import (
    ConversionStats,
    image_ref,
    log_summary,
    reject,
    require_dir,
)
from sceneloc.data.format import Sample
from sceneloc.errors import DataFormatError

logger = logging.getLogger(__name__)

#: The ``split_by`` values each dataset is published with.
SPLITS_BY = {"refcoco": ("unc", "google"), "refcoco+": ("unc",), "refcocog": ("umd", "google")}
IMAGE_NAME = "COCO_train2014_{:012d}.jpg"
ALL = "all"


class _PlainUnpickler(pickle.Unpickler):
    """Loads only builtin containers and scalars: a refs file needs nothing else."""

    def find_class(self, module: str, name: str) -> NoReturn:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _text(value: Any) -> Any:
    """Python 2 pickles hold byte strings; decode them so keys and sentences are ``str``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {_text(key): _text(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_text(item) for item in value]
    return value


def load_refs(path: Path) -> list[Any]:
    """The list of refs in a ``refs(<split_by>).p`` pickle, or an error naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"refs file {path} does not exist") from None
    except OSError as exc:
        raise DataFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        refs = _PlainUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # a corrupt pickle raises almost anything
        raise DataFormatError(f"{path}: not a readable refs pickle ({exc})") from None
    refs = _text(refs)
    if not isinstance(refs, list):
        raise DataFormatError(f"{path}: a refs file must hold a list of refs")
    return refs


def check_dataset(dataset: str, split_by: str) -> None:
    """Reject a dataset or a dataset/split_by pair that was never published."""
    if dataset not in SPLITS_BY:
        choices = ", ".join(SPLITS_BY)
        raise DataFormatError(f"unknown dataset {dataset!r}; choose one of {choices}")
    if split_by not in SPLITS_BY[dataset]:
        choices = " or ".join(SPLITS_BY[dataset])
        raise DataFormatError(f"{dataset} has no {split_by!r} splits, only {choices}")


def ref_sentences(ref: dict[str, Any]) -> list[tuple[Any, str]]:
    """``(sent_id, text)`` of each sentence of a ref; ``ValueError`` when one is malformed."""
    sentences = ref.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        raise ValueError("'sentences' must be a non-empty list")
    result = []
    for number, sentence in enumerate(sentences):
        if not isinstance(sentence, dict) or "sent_id" not in sentence:
            raise ValueError(f"sentence {number} has no 'sent_id'")
        text = next(
            (sentence[key].strip() for key in ("sent", "raw")
             if isinstance(sentence.get(key), str) and sentence[key].strip()),
            None,
        )  # fmt: skip
        if text is None:
            raise ValueError(f"sentence {number} (sent_id {sentence['sent_id']}) has no text")
        result.append((sentence["sent_id"], text))
    return result


def refs_in_split(refs: list[Any], split: str, path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, ref)`` for each ref of ``split`` (``"all"``: every one; ``where`` names it in
    messages); a split no ref belongs to is an error listing those the file has."""
    splits = {
        ref["split"] for ref in refs if isinstance(ref, dict) and isinstance(ref.get("split"), str)
    }
    if split != ALL and split not in splits:
        have = ", ".join(sorted(splits)) or "none"
        raise DataFormatError(f"{path}: no refs in split {split!r} (it has: {have})")
    for position, ref in enumerate(refs):
        if isinstance(ref, dict) and split != ALL and ref.get("split") != split:
            continue
        where = f"ref {position}"
        if isinstance(ref, dict) and "ref_id" in ref:
            where += f" (ref_id {ref['ref_id']})"
        yield where, ref


def convert_refcoco(
    refer_root: str | Path,
    images: str | Path,
    dataset: str = "refcoco",
    split_by: str = "unc",
    split: str = "val",
    *,
    relative_to: str | Path | None = None,
    skip_bad: bool = False,
    stats: ConversionStats | None = None,
) -> Iterator[Sample]:
    """Stream one sample per sentence of the refs in ``split`` (``"all"``: every split).

    A split no ref belongs to is an error listing the splits the file has. Malformed refs
    raise :class:`DataFormatError` naming the file and ref, or with ``skip_bad`` are
    logged and counted in ``stats``. Image paths follow
    :func:`~sceneloc.data.convert.image_ref` against ``relative_to``.
    """
    stats = stats if stats is not None else ConversionStats()
    refer_root, images = Path(refer_root), Path(images)
    relative_to = Path(relative_to) if relative_to is not None else None
    check_dataset(dataset, split_by)
    folder = require_dir(refer_root / dataset, f"{dataset} folder (refer layout)")
    require_dir(images, "image folder")
    refs_path = folder / f"refs({split_by}).p"
    refs = load_refs(refs_path)
    index = CocoIndex(folder / "instances.json", skip_bad, stats)
    annotations = index.annotations_by_id()

    yield from ref_samples(
        refs, split, refs_path, lambda ref: _ref_target(ref, index, annotations),
        images, relative_to, skip_bad, stats,
    )  # fmt: skip
    log_summary(f"{refs_path} ({split})", stats)


#: What a converter reads from one ref: its image file, its target boxes and a category.
RefTargets = Callable[[dict[str, Any]], tuple[str, list[Box], str | None]]


def ref_samples(
    refs: list[Any],
    split: str,
    refs_path: Path,
    targets: RefTargets,
    images: Path,
    relative_to: Path | None,
    skip_bad: bool,
    stats: ConversionStats,
) -> Iterator[Sample]:
    """One sample per sentence of each well-formed ref of ``split``: ``box`` the first
    target (``None`` for none), ``boxes`` every one when there are not exactly one."""
    for where, ref in refs_in_split(refs, split, refs_path):
        try:
            check_ref(ref)
            file_name, boxes, category = targets(ref)
            sentences = ref_sentences(ref)
        except ValueError as exc:
            reject(stats, refs_path, where, str(exc), skip_bad)
            continue
        for sent_id, text in sentences:
            stats.samples += 1
            yield Sample(
                id=f"{ref['ref_id']}-{sent_id}",
                image=image_ref(images / file_name, relative_to),
                query=text,
                box=boxes[0] if boxes else None,
                split=ref["split"],
                boxes=None if len(boxes) == 1 else boxes,
                category=category,
                image_id=ref["image_id"],
            )


def check_ref(ref: Any) -> None:
    """``ValueError`` for a ref that is not a dict with an id, an annotation, an image and a
    split."""
    if not isinstance(ref, dict):
        raise ValueError("a ref must be a dict")
    missing = [key for key in ("ref_id", "ann_id", "image_id", "split") if key not in ref]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    if not isinstance(ref["split"], str) or not ref["split"]:
        raise ValueError("'split' must be a non-empty string")


def _ref_target(
    ref: dict[str, Any], index: CocoIndex, annotations: dict[Any, Any]
) -> tuple[str, list[Box], str | None]:
    """The image file, box and category of a ref; ``ValueError`` when it is malformed."""
    annotation = ref_annotation(ref["ann_id"], ref["image_id"], index, annotations)
    category = index.categories[annotation.category_id]
    return image_file(index, annotation.image_id), [annotation.box], category


def ref_annotation(
    ann_id: Any, image_id: Any, index: CocoIndex, annotations: dict[Any, Any]
) -> Annotation:
    """The annotation ``ann_id`` of a ref on image ``image_id``; ``ValueError`` when it is
    not in the file, malformed or on another image."""
    if not isinstance(ann_id, int | str) or ann_id not in annotations:
        raise ValueError(f"ann_id {ann_id!r} is not in {index.path.name}")
    try:
        annotation = index.annotation(annotations[ann_id])
    except ValueError as exc:
        raise ValueError(f"its annotation {ann_id!r} in {index.path.name}: {exc}") from None
    if annotation.image_id != image_id:
        raise ValueError(
            f"image_id {image_id!r} differs from its annotation's {annotation.image_id!r}"
        )
    return annotation


def image_file(index: CocoIndex, image_id: Any) -> str:
    """The image's file name: ``instances.json``'s, else the COCO train2014 name."""
    if image_id not in index.images:
        raise ValueError(f"image {image_id!r} is not in {index.path.name}")
    file_name = index.images[image_id]
    if file_name is None:
        if not isinstance(image_id, int):
            raise ValueError(f"image {image_id!r} has no 'file_name'")
        file_name = IMAGE_NAME.format(image_id)
    return file_name
