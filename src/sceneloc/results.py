"""What the tasks return, one answer per image: ``locate`` a :class:`LocateAnswer` of a
:class:`LocateResult` per query, ``describe`` a :class:`DescribeAnswer` of a
:class:`RegionDescription` per region.

All of them serialise through :mod:`sceneloc.schema`, crop and draw themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sceneloc.boxes import Box
from sceneloc.candidates import Candidate, Candidates
from sceneloc.errors import SceneLocError
from sceneloc.schema import (
    DescribeRecord,
    LocateRecord,
    RegionRecord,
    ResultRecord,
    describe_record,
    locate_record,
    region_record,
    result_record,
)

#: Distinct colours for drawing several queries on one image (Tableau 10).
PALETTE = (
    "#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F",
    "#EDC948", "#B07AA1", "#FF9DA7", "#9C755F", "#BAB0AC",
)  # fmt: skip
#: How opaque a shaded mask is over the image, so the object stays visible beneath it.
MASK_OPACITY = 0.45


def slug(text: str, limit: int = 40) -> str:
    """A query as a short, safe piece of a file name (crops are named after their query)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "query"


@dataclass(frozen=True)
class Part:
    """One participant of an event box: the phrase that names it, its box and score."""

    phrase: str
    box: Box
    score: float


@dataclass(frozen=True)
class LocateResult:
    """The answer to one query on one image.

    ``candidates`` are ranked best first; ``box`` and ``score`` are the best one's, or
    ``None`` when no candidate reached the threshold. ``targets`` are the boxes of every
    thing the query refers to ("all the red umbrellas" may have several, a description of
    something absent none); left out, the best candidate alone. ``parts`` are the
    participants of an event box (``locate(..., events=True)``), each with its own box.
    ``image`` is the upright RGB image the boxes (and, from models that segment, the
    candidates' masks) refer to.
    """

    query: str
    candidates: Candidates
    image: Image.Image = field(repr=False, compare=False)
    targets: Candidates = None  # type: ignore[assignment]  # set in __post_init__
    parts: tuple[Part, ...] = ()

    def __post_init__(self) -> None:
        if self.targets is None:
            object.__setattr__(self, "targets", self.candidates[:1])

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if len(self.candidates) else None

    @property
    def box(self) -> Box | None:
        best = self.best
        return best.box if best else None

    @property
    def score(self) -> float | None:
        best = self.best
        return best.score if best else None

    @property
    def found(self) -> bool:
        return len(self.candidates) > 0

    def to_record(self, exact: bool = False, masks: bool = False) -> ResultRecord:
        return result_record(
            self.query, self.box, self.score, self.candidates, targets=self.targets,
            parts=self.parts, exact=exact, masks=masks,
        )  # fmt: skip

    def to_dict(self, masks: bool = False) -> dict[str, Any]:
        """``{"query", "box", "score", "candidates", "targets"}`` (and ``parts`` for an event
        box), as in ``sceneloc locate --json``; ``masks`` adds each candidate's ``mask``
        (COCO RLE) where the model segments."""
        return self.to_record(masks=masks).model_dump()

    def crop(self, index: int = 0, masked: bool = False) -> Image.Image | None:
        """The region of candidate ``index`` (the best by default); ``None`` if there is none.

        ``masked``: the cut-out, an RGBA image transparent outside the candidate's mask.
        """
        if index >= len(self.candidates):
            return None
        return self.candidates.crop(self.image, index, masked=masked)

    def draw(self, all_candidates: bool = False, masks: bool = False) -> Image.Image:
        """A copy of the image with this result's box (or all its candidates) drawn;
        ``masks`` shades each drawn candidate's mask too."""
        return draw_results(self.image, [self], all_candidates=all_candidates, masks=masks)


@dataclass(frozen=True)
class LocateAnswer(Sequence[LocateResult]):
    """Everything ``locate`` answered about one image: a sequence of per-query results.

    Iterating, indexing and ``len`` give the :class:`LocateResult` of each query in the
    order asked. ``path`` is the image's source file when it was given as one;
    ``timing_ms`` the model's time for all the queries.
    """

    image: Image.Image = field(repr=False, compare=False)
    results: tuple[LocateResult, ...]
    model: str
    path: str | None = None
    timing_ms: float = field(default=0.0, compare=False)

    @overload
    def __getitem__(self, index: int) -> LocateResult: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[LocateResult, ...]: ...
    def __getitem__(self, index):
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[LocateResult]:
        return iter(self.results)

    def to_record(self, timing: bool = False, masks: bool = False) -> LocateRecord:
        return locate_record(self, timing=timing, masks=masks)

    def to_dict(self, timing: bool = False, masks: bool = False) -> dict[str, Any]:
        """The ``sceneloc locate --json`` object (plus ``timing_ms`` with ``timing``, and
        each candidate's ``mask`` as COCO RLE with ``masks``, where the model segments)."""
        return self.to_record(timing=timing, masks=masks).model_dump()

    def draw(self, all_candidates: bool = False, masks: bool = False) -> Image.Image:
        """A copy of the image with each query's best box (or all) in its own colour;
        ``masks`` shades the drawn candidates' masks too."""
        return draw_results(self.image, self.results, all_candidates=all_candidates, masks=masks)

    def crops(self, masked: bool = False) -> list[Image.Image | None]:
        """The best box's region of each query (``masked``: its RGBA cut-out), ``None`` where
        nothing was found."""
        return [result.crop(masked=masked) for result in self.results]

    def save(self, folder: str | Path, stem: str = "image", masked: bool = False) -> list[Path]:
        """Write ``<stem>.annotated.png`` and one ``<stem>.cropNN.<query>.png`` per found query.

        ``masked``: the masks shaded on the annotated image, and the crops as RGBA cut-outs.
        """
        folder = Path(folder)
        written = [folder / f"{stem}.annotated.png"]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.draw(masks=masked).save(written[0])
            crops = self.crops(masked=masked)
            for index, (result, crop) in enumerate(zip(self.results, crops), start=1):
                if crop is not None:
                    written.append(folder / f"{stem}.crop{index:02d}.{slug(result.query)}.png")
                    crop.save(written[-1])
        except OSError as exc:
            raise SceneLocError(f"cannot write to {folder}: {exc.strerror or exc}") from None
        return written


def draw_results(
    image: Image.Image,
    results: Sequence[LocateResult],
    all_candidates: bool = False,
    masks: bool = False,
) -> Image.Image:
    """Draw each result's best box (or all candidates) in its own colour, with query and score.

    ``masks``: each drawn candidate's mask is shaded in its colour first, where it has one.
    """
    canvas = shade_masks(image, results, all_candidates) if masks else image.copy()
    pen = BoxPen(canvas)
    for index, result in enumerate(results):
        colour = PALETTE[index % len(PALETTE)]
        shown = result.candidates if all_candidates else result.candidates[:1]
        for rank, candidate in enumerate(shown):
            label = f"{result.query} {candidate.score:.2f}" if rank == 0 else None
            pen.box(candidate.box, colour, label, thin=rank > 0)
    return canvas


class BoxPen:
    """Draws boxes on an image with a line width and font sized to it, each optionally
    labelled in a filled tag above its top-left corner."""

    def __init__(self, canvas: Image.Image) -> None:
        self.draw = ImageDraw.Draw(canvas)
        self.width = max(2, round(max(canvas.size) / 400))
        self.font = ImageFont.load_default(size=max(12, round(max(canvas.size) / 60)))

    def box(self, box: Box, colour: str, label: str | None = None, thin: bool = False) -> None:
        width = max(1, self.width // 2) if thin else self.width
        self.draw.rectangle(box, outline=colour, width=width)
        if label is None:
            return
        left = box[0] + self.width
        top = max(0.0, box[1] - self.font.size - 2 * self.width) + self.width
        self.draw.rectangle(self.draw.textbbox((left, top), label, font=self.font), fill=colour)
        self.draw.text((left, top), label, fill="white", font=self.font)


def shade_masks(
    image: Image.Image, results: Sequence[LocateResult], all_candidates: bool = False
) -> Image.Image:
    """A copy of the image with each result's drawn candidates' masks blended in its colour."""
    canvas = image.convert("RGB")
    for index, result in enumerate(results):
        shown = result.candidates if all_candidates else result.candidates[:1]
        if shown.masks is None or not len(shown):
            continue
        opacity = shown.masks.any(axis=0).astype(np.uint8) * round(255 * MASK_OPACITY)
        colour = Image.new("RGB", canvas.size, PALETTE[index % len(PALETTE)])
        canvas.paste(colour, (0, 0), Image.fromarray(opacity))
    return canvas


@dataclass(frozen=True)
class RegionDescription:
    """What was said of one region: its ``box`` (the given one, or the one the model found
    in dense mode), the ``caption`` and its ``score`` (the caption's length-normalised
    log-probability, ``None`` where the model gives no token scores)."""

    box: Box
    caption: str
    score: float | None
    image: Image.Image = field(repr=False, compare=False)

    def to_record(self) -> RegionRecord:
        return region_record(self.box, self.caption, self.score)

    def to_dict(self) -> dict[str, Any]:
        """``{"box", "caption", "score"}``, as in ``sceneloc describe --json``."""
        return self.to_record().model_dump()

    def crop(self) -> Image.Image:
        return self.image.crop(tuple(round(v) for v in self.box))


@dataclass(frozen=True)
class DescribeAnswer(Sequence[RegionDescription]):
    """Everything ``describe`` said about one image: a sequence of per-region descriptions,
    in the order of the given boxes (or as the model found them)."""

    image: Image.Image = field(repr=False, compare=False)
    regions: tuple[RegionDescription, ...]
    model: str
    path: str | None = None
    timing_ms: float = field(default=0.0, compare=False)

    @overload
    def __getitem__(self, index: int) -> RegionDescription: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[RegionDescription, ...]: ...
    def __getitem__(self, index):
        return self.regions[index]

    def __len__(self) -> int:
        return len(self.regions)

    def __iter__(self) -> Iterator[RegionDescription]:
        return iter(self.regions)

    @property
    def captions(self) -> list[str]:
        return [region.caption for region in self.regions]

    def to_record(self, timing: bool = False) -> DescribeRecord:
        return describe_record(self, timing=timing)

    def to_dict(self, timing: bool = False) -> dict[str, Any]:
        """The ``sceneloc describe --json`` object (plus ``timing_ms`` with ``timing``)."""
        return self.to_record(timing=timing).model_dump()

    def draw(self) -> Image.Image:
        """A copy of the image with each region's box in its own colour, numbered as in the
        table (captions are often longer than the box is wide)."""
        canvas = self.image.copy()
        pen = BoxPen(canvas)
        for index, region in enumerate(self.regions, start=1):
            pen.box(region.box, PALETTE[(index - 1) % len(PALETTE)], str(index))
        return canvas

    def crops(self) -> list[Image.Image]:
        return [region.crop() for region in self.regions]

    def save(self, folder: str | Path, stem: str = "image") -> list[Path]:
        """Write ``<stem>.annotated.png`` and one ``<stem>.regionNN.<caption>.png`` per region."""
        folder = Path(folder)
        written = [folder / f"{stem}.annotated.png"]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.draw().save(written[0])
            for index, region in enumerate(self.regions, start=1):
                written.append(folder / f"{stem}.region{index:02d}.{slug(region.caption)}.png")
                region.crop().save(written[-1])
        except OSError as exc:
            raise SceneLocError(f"cannot write to {folder}: {exc.strerror or exc}") from None
        return written
