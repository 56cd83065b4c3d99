"""Response models of the HTTP API, so that ``/openapi.json`` documents what it returns.

They mirror :func:`sceneloc.results_to_dict` (the ``sceneloc locate --json`` object); the
server builds its answers with that function and these models only describe and check them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

Box = list[float]
BOX_DESCRIPTION = "[x1, y1, x2, y2] in pixels of the upright image, clipped to it"


class CandidateOut(BaseModel):
    box: Box = Field(description=BOX_DESCRIPTION, min_length=4, max_length=4)
    score: float
    label: str = Field(description="The text span the box was matched to.")


class ResultOut(BaseModel):
    query: str = Field(description="The query, whitespace normalised.")
    box: Box | None = Field(description="Best candidate's box; null if none reaches the threshold.")
    score: float | None = Field(description="The best candidate's score, or null.")
    candidates: list[CandidateOut] = Field(description="Ranked best first, at most top_k.")


class ImageOut(BaseModel):
    path: str | None = Field(description="The uploaded file's name, if the client sent one.")
    width: int
    height: int


class LocateResponse(BaseModel):
    """The ``sceneloc locate --json`` object plus the inference time."""

    image: ImageOut
    model: str
    results: list[ResultOut] = Field(description="One per query, in the order asked.")
    timing_ms: float = Field(description="Model time for this request, queueing excluded.")


class ModelOut(BaseModel):
    name: str = Field(description="As given to `sceneloc serve --model`.")
    backend: str
    tasks: list[str] = Field(description="What the model can be asked to do, e.g. locate.")
    device: str
    dtype: str
    default_threshold: float = Field(description="Used when a request gives no threshold.")
    capabilities: list[str] = Field(description="What the model's backend family can do.")


class LimitsOut(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    workers: int = Field(description="Inference threads sharing the loaded model.")
    queue_limit: int = Field(description="Requests admitted at once, running and waiting.")


class ModelsResponse(BaseModel):
    models: list[ModelOut]
    limits: LimitsOut


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ErrorResponse(BaseModel):
    error: str = Field(description="What went wrong, in one line.")


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """``{"error": message}``, the message folded onto one line."""
    return JSONResponse({"error": " ".join(message.split())}, status, headers=headers)
