"""Small typed results: what ``locate`` returns, able to serialise, crop and draw itself."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from sceneloc.boxes import Box

#: Distinct colours for drawing several queries on one image (Tableau 10).
PALETTE = (
    "#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F",
    "#EDC948", "#B07AA1", "#FF9DA7", "#9C755F", "#BAB0AC",
)  # fmt: skip


def slug(text: str, limit: int = 40) -> str:
    """A query as a short, safe piece of a file name (crops are named after their query)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "query"


@dataclass(frozen=True)
class Candidate:
    """One ranked guess for a query: a box, its score and the text span it matched."""

    box: Box
    score: float
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 4),
            "label": self.label,
        }


@dataclass(frozen=True)
class LocateResult:
    """The answer to one query on one image.

    ``box`` and ``score`` are those of the best candidate, or ``None`` when no candidate
    reached the threshold. ``image`` is the upright RGB image the boxes refer to.
    """

    query: str
    candidates: list[Candidate]
    image: Image.Image = field(repr=False, compare=False)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def box(self) -> Box | None:
        return self.best.box if self.best else None

    @property
    def score(self) -> float | None:
        return self.best.score if self.best else None

    @property
    def found(self) -> bool:
        return self.best is not None

    def to_dict(self) -> dict[str, Any]:
        best = self.best.to_dict() if self.best else None
        return {
            "query": self.query,
            "box": best["box"] if best else None,
            "score": best["score"] if best else None,
            "candidates": [c.to_dict() for c in self.candidates],
        }

    def crop(self) -> Image.Image | None:
        """The region of the best box, or ``None`` when nothing was found."""
        if self.box is None:
            return None
        x1, y1, x2, y2 = self.box
        return self.image.crop(
            (int(x1), int(y1), max(int(x1) + 1, round(x2)), max(int(y1) + 1, round(y2)))
        )

    def draw(self, all_candidates: bool = False) -> Image.Image:
        """A copy of the image with this result's box (or all its candidates) drawn."""
        return draw_results(self.image, [self], all_candidates=all_candidates)


def draw_results(
    image: Image.Image, results: Sequence[LocateResult], all_candidates: bool = False
) -> Image.Image:
    """Draw each result's best box (or all candidates) in its own colour, with query and score."""
    canvas = image.copy()
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


def results_to_dict(
    results: Sequence[LocateResult], model: str, path: str | None = None
) -> dict[str, Any]:
    """The JSON object shared by ``sceneloc locate --json`` and the HTTP API."""
    width, height = results[0].image.size if results else (None, None)
    return {
        "image": {"path": path, "width": width, "height": height},
        "model": model,
        "results": [r.to_dict() for r in results],
    }
