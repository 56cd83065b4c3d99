"""Response models of the HTTP API, so that ``/openapi.json`` documents what it returns.

The answers are the library's own :class:`sceneloc.schema.LocateResponse` and
:class:`~sceneloc.schema.DescribeResponse`, the one definition of the ``sceneloc locate
--json`` and ``sceneloc describe --json`` objects; the models here are the server's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse


class ModelOut(BaseModel):
    name: str = Field(description="As given to `sceneloc serve --model`.")
    backend: str
    tasks: list[str] = Field(description="What the model can be asked to do, e.g. locate.")
    serves: list[str] = Field(
        description="What this server asks it to do: locate (POST /v1/locate), describe "
        "(POST /v1/describe)."
    )
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
