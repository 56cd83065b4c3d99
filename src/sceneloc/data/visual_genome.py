"""Visual Genome region descriptions as samples: one sample per region description.

The files (visualgenome.org, version 1.2)::

    region_descriptions.json  [{"id": <image id>, "regions": [{"region_id", "image_id",
                               "phrase", "x", "y", "width", "height"}, ...]}, ...]
    image_data.json           [{"image_id", "url", "width", "height", "coco_id",
                               "flickr_id"}, ...]
    <images>/VG_100K/<id>.jpg, <images>/VG_100K_2/<id>.jpg

A sample's ``query`` is the phrase, ``box`` the region (``x, y, width, height`` turned into
``[x1, y1, x2, y2]`` and clipped to the image, as some regions reach past it), ``id`` the
region id and ``image_id`` the image's. Lines with the same image and box are one region's
references, so the file serves ``sceneloc evaluate --task describe`` as it is.

The image is ``<images>/<folder of its url>/<id>.jpg`` (``VG_100K`` or ``VG_100K_2``), or
``<images>/<id>.jpg`` when the two folders were merged. Splits: with ``split_file`` (the
DenseCap split, ``{"train": [ids], "val": [ids], "test": [ids]}``) each image's split from
it, images in none of them left out and counted; without it, ``split`` for every sample.
Regions without a phrase, empty ones and ones wholly outside their image are skipped and
counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from sceneloc.boxes import Box, clip_box
from sceneloc.data.coco import describe
from sceneloc.data.convert import (
    ConversionStats,
    image_ref,
    is_number,
    load_json,
    log_summary,
    reject,
    require_dir,
    xywh_to_xyxy,
)
from sceneloc.data.format import Sample
from sceneloc.errors import DataFormatError

NO_PHRASE = "regions without a phrase"
EMPTY = "empty regions or regions outside their image"
NO_SPLIT = "regions of images in no split"
#: The split of every sample when no split file is given.
DEFAULT_SPLIT = "train"


@dataclass(frozen=True)
class ImageInfo:
    """What ``image_data.json`` says of one image."""

    file: Path
    width: int
    height: int


def _image_id(value: Any) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def read_image_data(path: Path, images: Path, skip_bad: bool, stats: ConversionStats) -> dict:
    """``image_data.json`` as ``{image id: ImageInfo}``."""
    data = load_json(path, "Visual Genome image_data.json")
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: image data must be a JSON list of images")
    found: dict[int | str, ImageInfo] = {}
    for index, record in enumerate(data):
        identity = record.get("image_id", record.get("id")) if isinstance(record, dict) else None
        where = f"image {index}" + (f" (image_id {identity})" if _image_id(identity) else "")
        if not _image_id(identity):
            reject(stats, path, where, "no 'image_id'", skip_bad)
            continue
        width, height = record.get("width"), record.get("height")
        if not all(is_number(v) and v > 0 for v in (width, height)):
            reject(stats, path, where, "'width' and 'height' must be positive numbers", skip_bad)
            continue
        url = record.get("url")
        name = f"{identity}.jpg"
        file = images / name
        if isinstance(url, str) and url:
            in_folder = images / PurePosixPath(urlparse(url).path).parent.name / name
            file = in_folder if in_folder.is_file() or not file.is_file() else file
        found[identity] = ImageInfo(file, int(width), int(height))
    return found


def read_split_file(path: Path) -> dict[int | str, str]:
    """A DenseCap-style split file as ``{image id: split name}``."""
    data = load_json(path, "split file")
    if not isinstance(data, dict) or not all(isinstance(ids, list) for ids in data.values()):
        raise DataFormatError(f"{path}: a split file maps split names to lists of image ids")
    splits: dict[int | str, str] = {}
    for name, ids in data.items():
        for identity in ids:
            if not _image_id(identity):
                raise DataFormatError(f"{path}: split {name!r} lists {identity!r}, not an id")
            if identity in splits:
                raise DataFormatError(
                    f"{path}: image {identity} is in both {splits[identity]!r} and {name!r}"
                )
            splits[identity] = name
    return splits


def region_box(record: dict, info: ImageInfo) -> Box | None:
    """The region's box clipped to its image; ``None`` when nothing of it is left."""
    values = [record.get(k) for k in ("x", "y", "width", "height")]
    box = xywh_to_xyxy(values, "x, y, width, height")
    clipped = clip_box(box, info.width, info.height)
    if not clipped[2] > clipped[0] or not clipped[3] > clipped[1]:
        return None
    return clipped


def convert_visual_genome(
    region_descriptions: str | Path,
    image_data: str | Path,
    images: str | Path,
    *,
    split_file: str | Path | None = None,
    split: str | None = None,
    relative_to: str | Path | None = None,
    skip_bad: bool = False,
    stats: ConversionStats | None = None,
) -> Iterator[Sample]:
    """Stream one sample per region description (see the module doc).

    Image paths follow :func:`~sceneloc.data.convert.image_ref` against ``relative_to``.
    Malformed records raise :class:`DataFormatError` naming the file and record, or with
    ``skip_bad`` are logged and counted in ``stats``, as are the regions left out.
    """
    stats = stats if stats is not None else ConversionStats()
    region_descriptions, images = Path(region_descriptions), Path(images)
    relative_to = Path(relative_to) if relative_to is not None else None
    require_dir(images, "image folder")
    splits = read_split_file(Path(split_file)) if split_file is not None else None
    infos = read_image_data(Path(image_data), images, skip_bad, stats)
    data = load_json(region_descriptions, "Visual Genome region_descriptions.json")
    if not isinstance(data, list):
        raise DataFormatError(f"{region_descriptions}: region descriptions must be a JSON list")
    for index, entry in enumerate(data):
        where = describe(index, entry, "image")
        regions = entry.get("regions") if isinstance(entry, dict) else None
        if not isinstance(regions, list):
            reject(stats, region_descriptions, where, "no 'regions' list", skip_bad)
            continue
        for position, record in enumerate(regions):
            sample = _sample(record, infos, splits, split, relative_to, stats)
            if isinstance(sample, str):
                region = f"region {position}"
                if isinstance(record, dict) and _image_id(record.get("region_id")):
                    region += f" (region_id {record['region_id']})"
                reject(stats, region_descriptions, f"{where}, {region}", sample, skip_bad)
            elif sample is not None:
                stats.samples += 1
                yield sample
    log_summary(str(region_descriptions), stats)


def _sample(
    record: Any,
    infos: dict[int | str, ImageInfo],
    splits: dict[int | str, str] | None,
    split: str | None,
    relative_to: Path | None,
    stats: ConversionStats,
) -> Sample | str | None:
    """The region's sample, ``None`` for a region skipped on purpose (counted), or what is
    wrong with it."""
    if not isinstance(record, dict):
        return "a region must be a JSON object"
    missing = [k for k in ("region_id", "image_id", "phrase", "x", "y", "width", "height")
               if k not in record]  # fmt: skip
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    image_id = record["image_id"]
    info = infos.get(image_id) if _image_id(image_id) else None
    if info is None:
        return f"image_id {image_id!r} is not in the image data"
    if not isinstance(record["phrase"], str):
        return "'phrase' must be a string"
    try:
        box = region_box(record, info)
    except ValueError as exc:
        return str(exc)
    phrase = " ".join(record["phrase"].split())
    if not phrase:
        stats.skip(NO_PHRASE)
        return None
    if box is None:
        stats.skip(EMPTY)
        return None
    if splits is not None and image_id not in splits:
        stats.skip(NO_SPLIT)
        return None
    return Sample(
        id=str(record["region_id"]),
        image=image_ref(info.file, relative_to),
        query=phrase,
        box=box,
        split=splits[image_id] if splits is not None else split or DEFAULT_SPLIT,
        image_id=image_id,
    )
