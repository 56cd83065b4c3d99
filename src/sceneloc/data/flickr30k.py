"""Flickr30k Entities phrase grounding as samples: one sample per annotated phrase.

The layout (github.com/BryanPlummer/flickr30k_entities)::

    <root>/Sentences/<id>.txt        five captions, phrases marked [/EN#<entity>/<type> words]
    <root>/Annotations/<id>.xml      PASCAL-VOC-like: <object>s naming entities, with a
                                     <bndbox>, or <nobndbox>1</nobndbox> and/or <scene>1</scene>
    <root>/flickr30k-images/<id>.jpg

A sample's ``query`` is the phrase, ``boxes`` every box of its entity (an object may name
several entities, an entity may have several objects) and ``box`` their union, ``type``
the entity's first type; ``id`` is ``"<image id>-<caption index>-<phrase index>"``
(0-based). Boxes are 1-based pixel coordinates in the XML; like the dataset's own
reference parser, 1 is subtracted so they are 0-based as everywhere else in sceneloc.

Phrases without a box are skipped and counted by why: the entity covers the whole scene,
is marked not visual (``/EN#0/notvisual``), or has no box (``nobndbox`` or no object).
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sceneloc.boxes import Box
from sceneloc.data.convert import (
    ConversionStats,
    group_boxes,
    image_ref,
    log_summary,
    read_text,
    reject,
    require_dir,
)
from sceneloc.data.format import Sample, parse_box
from sceneloc.errors import DataFormatError

logger = logging.getLogger(__name__)

SCENE = "scene-level phrases"
NOT_VISUAL = "non-visual phrases"
NO_BOX = "phrases without a box"
MISSING = "images with missing files"

#: ``[/EN#18/people/other A child]``: entity id, types, phrase.
PHRASE = re.compile(r"\[/EN#(\d+)((?:/[^/\s\[\]]+)+)\s+([^\[\]]*?)\s*\]")
#: Image ids are file stems: no folders, no spaces.
IMAGE_ID = re.compile(r"[^/\\\s]+")


class BadFile(ValueError):
    """A malformed file, and where in it: a line number, an element, or ``None``."""

    def __init__(self, path: Path, where: int | str | None, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.where = where


@dataclass(frozen=True)
class Phrase:
    """One marked phrase of a caption."""

    entity: str
    types: list[str]
    text: str


@dataclass
class EntityBoxes:
    """What an Annotations XML file says about each entity."""

    boxes: dict[str, list[Box]] = field(default_factory=dict)
    scene: set[str] = field(default_factory=set)
    no_box: set[str] = field(default_factory=set)


def parse_caption(line: str) -> list[Phrase]:
    """The marked phrases of one caption; ``ValueError`` when its markup is malformed."""
    phrases = []
    rest = []
    position = 0
    for match in PHRASE.finditer(line):
        rest.append(line[position : match.start()])
        position = match.end()
        entity, types, text = match.groups()
        if not text:
            raise ValueError(f"empty phrase in {match.group(0)!r}")
        phrases.append(Phrase(entity, types.strip("/").split("/"), text))
    rest.append(line[position:])
    leftover = "".join(rest)
    if "[" in leftover or "]" in leftover:
        raise ValueError("malformed phrase markup (expected [/EN#<id>/<type> words])")
    return phrases


def _flag(element: ET.Element, tag: str) -> bool:
    text = element.findtext(tag)
    if text is None:
        return False
    try:
        return int(text.strip()) > 0
    except ValueError:
        raise ValueError(f"<{tag}> must be a number, got {text!r}") from None


def _bndbox(element: ET.Element) -> Box:
    values = []
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = element.findtext(tag)
        try:
            values.append(float(text.strip()) - 1.0)  # 1-based -> 0-based pixels
        except (AttributeError, ValueError):
            raise ValueError(f"<bndbox> needs a numeric <{tag}>, got {text!r}") from None
    return parse_box(values, "bndbox")


def parse_annotations(path: Path) -> EntityBoxes:
    """The boxes, scene and no-box entities of one XML file; :class:`BadFile` if malformed."""
    try:
        root = ET.fromstring(path.read_bytes())
    except OSError as exc:
        raise DataFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ET.ParseError as exc:
        raise BadFile(path, exc.position[0], f"not XML ({exc})") from None
    result = EntityBoxes()
    for number, element in enumerate(root.iter("object"), start=1):
        names = [(name.text or "").strip() for name in element.findall("name")]
        if not names or not all(names):
            raise BadFile(path, f"<object> {number}", "no <name> or an empty one")
        try:
            bndbox = element.find("bndbox")
            box = _bndbox(bndbox) if bndbox is not None else None
            no_box, scene = _flag(element, "nobndbox"), _flag(element, "scene")
        except ValueError as exc:
            raise BadFile(path, f"<object> {number} ({', '.join(names)})", str(exc)) from None
        for name in names:
            if box is not None:
                result.boxes.setdefault(name, []).append(box)
            if scene:
                result.scene.add(name)
            if no_box:
                result.no_box.add(name)
    return result


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise BadFile(path, None, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise DataFormatError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_split(path: Path) -> list[tuple[int, str]]:
    """``(line number, image id)`` of each non-blank line of a split file."""
    lines = read_text(path, "split file").splitlines()
    return [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]


def convert_flickr30k_entities(
    root: str | Path,
    split_file: str | Path,
    split: str | None = None,
    *,
    images: str | Path | None = None,
    relative_to: str | Path | None = None,
    skip_bad: bool = False,
    stats: ConversionStats | None = None,
) -> Iterator[Sample]:
    """Stream one sample per phrase with a box, for each image the split file lists.

    ``split`` defaults to the split file's stem (``val.txt`` -> ``val``); ``images``
    defaults to ``<root>/flickr30k-images``. Phrases without a box are counted in
    ``stats``. A malformed caption line, XML file or split-file line raises
    :class:`DataFormatError` naming the file and line, or with ``skip_bad`` is logged and
    counted (an image whose files are missing or whose XML is malformed is skipped whole).
    """
    stats = stats if stats is not None else ConversionStats()
    root, split_file = Path(root), Path(split_file)
    images = Path(images) if images is not None else root / "flickr30k-images"
    relative_to = Path(relative_to) if relative_to is not None else None
    split = split or split_file.stem
    require_dir(root, "Flickr30k Entities folder")
    sentences_dir = require_dir(root / "Sentences", "Sentences folder")
    annotations_dir = require_dir(root / "Annotations", "Annotations folder")
    require_dir(images, "image folder")

    for number, image_id in read_split(split_file):
        if not IMAGE_ID.fullmatch(image_id):
            reject(stats, split_file, number, f"not an image id: {image_id!r}", skip_bad)
            continue
        sentences_path = sentences_dir / f"{image_id}.txt"
        annotations_path = annotations_dir / f"{image_id}.xml"
        missing = [str(p) for p in (sentences_path, annotations_path) if not p.is_file()]
        if missing:
            problem = f"image {image_id}: missing {', '.join(missing)}"
            reject(stats, split_file, number, problem, skip_bad, reason=MISSING)
            continue
        try:
            entities = parse_annotations(annotations_path)
            lines = _read_lines(sentences_path)
        except BadFile as exc:
            reject(stats, exc.path, exc.where, str(exc), skip_bad)
            continue
        image = image_ref(images / f"{image_id}.jpg", relative_to)
        for index, line in enumerate(lines):
            try:
                phrases = parse_caption(line)
            except ValueError as exc:
                reject(stats, sentences_path, index + 1, str(exc), skip_bad)
                continue
            for position, phrase in enumerate(phrases):
                boxes = entities.boxes.get(phrase.entity)
                if not boxes:
                    stats.skip(_why_no_box(phrase, entities))
                    continue
                box, several = group_boxes(boxes)
                stats.samples += 1
                yield Sample(
                    id=f"{image_id}-{index}-{position}",
                    image=image,
                    query=phrase.text,
                    box=box,
                    split=split,
                    boxes=several,
                    type=phrase.types[0],
                    image_id=image_id,
                )
    log_summary(f"{split_file} ({split})", stats)


def _why_no_box(phrase: Phrase, entities: EntityBoxes) -> str:
    if phrase.entity == "0" or "notvisual" in phrase.types:
        return NOT_VISUAL
    if phrase.entity in entities.scene:
        return SCENE
    return NO_BOX
