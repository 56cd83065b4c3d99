"""What ``locate`` returns: a :class:`LocateAnswer` per image, a :class:`LocateResult` per query.

Both serialise through :mod:`sceneloc.schema`, crop and draw themselves.
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
from sceneloc.schema import LocateRecord, ResultRecord, locate_record, result_record

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
class LocateResult:
    """The answer to one query on one image.

    ``candidates`` are ranked best first; ``box`` and ``score`` are the best one's, or
    ``None`` when no candidate reached the threshold. ``image`` is the upright RGB image the
    boxes (and, from models that segment, the candidates' masks) refer to.
    """

    query: str
    candidates: Candidates
    image: Image.Image = field(repr=False, compare=False)

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
            self.query, self.box, self.score, self.candidates, exact=exact, masks=masks
        )

    def to_dict(self, masks: bool = False) -> dict[str, Any]:
        """``{"query", "box", "score", "candidates"}``, as in ``sceneloc locate --json``;
        ``masks`` adds each candidate's ``mask`` (COCO RLE) where the model segments."""
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
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 400))
    font = ImageFont.load_default(size=max(12, round(max(canvas.size) / 60)))
    for index, result in enumerate(results):
        colour = PALETTE[index % len(PALETTE)]
        shown = result.candidates if all_candidates else result.candidates[:1]
        for rank, candidate in enumerate(shown):
            draw.rectangle(
                candidate.box, outline=colour, width=width if rank == 0 else max(1, width // 2)
            )
            if rank == 0:
                text = f"{result.query} {candidate.score:.2f}"
                left, top = candidate.box[0], max(0.0, candidate.box[1] - font.size - 2 * width)
                bbox = draw.textbbox((left + width, top + width), text, font=font)
                draw.rectangle(bbox, fill=colour)
                draw.text((left + width, top + width), text, fill="white", font=font)
    return canvas


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
