"""The JSON answer, defined once and written by one function for every output.

``sceneloc locate --json`` prints a :class:`LocateRecord` (``sceneloc describe --json`` a
:class:`DescribeRecord`, built by :func:`describe_record`), the HTTP API answers a
:class:`LocateResponse` (the same plus the model time), ``sceneloc batch`` writes one
:class:`ResultRecord` a line with its image, and ``--save-predictions`` writes one
:class:`PredictionRecord` a line. All of them are built by :func:`result_record` (one query)
and :func:`locate_record` (one image); the server hands these models to OpenAPI. A
candidate's mask (COCO run-length encoding) is written only when asked for (``masks=True``,
``sceneloc locate --masks``), so answers without masks keep their shape.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from sceneloc.boxes import Box
from sceneloc.masks import encode_rle

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sceneloc.candidates import Candidates
    from sceneloc.results import DescribeAnswer, LocateAnswer, Part

BOX_DESCRIPTION = "[x1, y1, x2, y2] in pixels of the upright image, clipped to it"
#: Decimals kept on the wire; predictions files keep exact floats (``exact=True``) so that
#: re-scoring one gives the numbers of the run that wrote it.
BOX_DECIMALS, SCORE_DECIMALS = 2, 4


class MaskRecord(BaseModel):
    """A mask as COCO's compressed run-length encoding (pycocotools reads it as it is)."""

    size: list[int] = Field(description="[height, width] of the image.", min_length=2, max_length=2)
    counts: str = Field(description="COCO compressed RLE of the mask, column by column.")


class CandidateRecord(BaseModel):
    box: Box = Field(description=BOX_DESCRIPTION, min_length=4, max_length=4)
    score: float | None = Field(description="Null only where the source gives no score.")
    label: str = Field(description="The text span the box was matched to.")
    mask: MaskRecord | None = Field(
        default=None,
        exclude_if=lambda mask: mask is None,
        description="The candidate's mask; present only when masks were asked for and the "
        "model segments.",
    )


class PartRecord(BaseModel):
    phrase: str = Field(description="The words of the query naming this participant.")
    box: Box = Field(description=BOX_DESCRIPTION, min_length=4, max_length=4)
    score: float | None = Field(description="The participant's own score.")


class ResultRecord(BaseModel):
    query: str = Field(description="The query, whitespace normalised.")
    box: Box | None = Field(description="Best candidate's box; null if none reaches the threshold.")
    score: float | None = Field(description="The best candidate's score, or null.")
    candidates: list[CandidateRecord] | None = Field(
        description="Ranked best first, at most top_k; null only in a predictions file whose "
        "source gave no ranking."
    )
    targets: list[CandidateRecord] | None = Field(
        default=None,
        description="Every thing the query refers to, best first: several for a query about "
        "several things, none when it is not there; usually the best candidate alone. Null "
        "only in a predictions file whose source gave no targets.",
    )
    parts: list[PartRecord] | None = Field(
        default=None,
        exclude_if=lambda parts: parts is None,
        description="An event box's participants, each with its own box; present only for "
        "event boxes (events=true).",
    )


class PredictionRecord(ResultRecord):
    """One line of a predictions file: what was answered for the sample ``id``."""

    id: str


class ImageRecord(BaseModel):
    path: str | None = Field(description="The image's file name, when known.")
    width: int
    height: int


class LocateRecord(BaseModel):
    """The ``sceneloc locate --json`` object."""

    image: ImageRecord
    model: str
    results: list[ResultRecord] = Field(description="One per query, in the order asked.")


class LocateResponse(LocateRecord):
    """The ``sceneloc locate --json`` object plus the inference time."""

    timing_ms: float = Field(description="Model time for this request, queueing excluded.")


def _number(value: float | None, decimals: int | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value if decimals is None else round(value, decimals)


def _box(box: Box | None, exact: bool) -> Box | None:
    if box is None:
        return None
    return [float(v) if exact else round(float(v), BOX_DECIMALS) for v in box]


def result_record(
    query: str,
    box: Box | None,
    score: float | None,
    candidates: Candidates | None,
    *,
    targets: Candidates | None = None,
    parts: Sequence[Part] = (),
    exact: bool = False,
    masks: bool = False,
) -> ResultRecord:
    """The record of one query's answer; ``exact`` keeps full floats (predictions files),
    ``masks`` adds each candidate's mask as RLE where the model gave one."""
    decimals = None if exact else SCORE_DECIMALS

    def records(found: Candidates | None) -> list[CandidateRecord] | None:
        if found is None:
            return None
        return [
            CandidateRecord(
                box=_box(c.box, exact),
                score=_number(c.score, decimals),
                label=c.label,
                mask=encode_rle(c.mask) if masks and c.mask is not None else None,
            )
            for c in found
        ]

    return ResultRecord(
        query=query,
        box=_box(box, exact),
        score=_number(score, decimals),
        candidates=records(candidates),
        targets=records(targets),
        parts=[
            PartRecord(phrase=p.phrase, box=_box(p.box, exact), score=_number(p.score, decimals))
            for p in parts
        ]
        or None,
    )


def locate_record(
    answer: LocateAnswer, *, timing: bool = False, masks: bool = False
) -> LocateRecord:
    """The record of one image's answer; ``timing`` adds the model time (the HTTP answer),
    ``masks`` the candidates' masks."""
    width, height = answer.image.size
    fields: dict[str, Any] = {
        "image": ImageRecord(path=answer.path, width=width, height=height),
        "model": answer.model,
        "results": [result.to_record(masks=masks) for result in answer],
    }
    if timing:
        return LocateResponse(**fields, timing_ms=round(answer.timing_ms, 2))
    return LocateRecord(**fields)


class RegionRecord(BaseModel):
    box: Box = Field(description=BOX_DESCRIPTION, min_length=4, max_length=4)
    caption: str = Field(description="What the region shows, in words.")
    score: float | None = Field(
        description="The caption's length-normalised log-probability (mean over its tokens); "
        "null where the model gives no token scores."
    )


class DescribeRecord(BaseModel):
    """The ``sceneloc describe --json`` object."""

    image: ImageRecord
    model: str
    regions: list[RegionRecord] = Field(
        description="One per given box, in the order given; without boxes, the regions the "
        "model found."
    )


class DescribeResponse(DescribeRecord):
    """The ``sceneloc describe --json`` object plus the inference time."""

    timing_ms: float = Field(description="Model time for this request, queueing excluded.")


def region_record(box: Box, caption: str, score: float | None) -> RegionRecord:
    return RegionRecord(
        box=_box(box, exact=False), caption=caption, score=_number(score, SCORE_DECIMALS)
    )


def describe_record(answer: DescribeAnswer, *, timing: bool = False) -> DescribeRecord:
    """The record of one image's descriptions; ``timing`` adds the model time (HTTP)."""
    width, height = answer.image.size
    fields: dict[str, Any] = {
        "image": ImageRecord(path=answer.path, width=width, height=height),
        "model": answer.model,
        "regions": [region.to_record() for region in answer],
    }
    if timing:
        return DescribeResponse(**fields, timing_ms=round(answer.timing_ms, 2))
    return DescribeRecord(**fields)
