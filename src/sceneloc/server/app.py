"""The HTTP API: a thin FastAPI layer over :meth:`sceneloc.Grounder.locate`.

The model is loaded by the caller, once, before the app exists. Each request's image is
decoded in a thread and its inference runs in a pool of ``workers`` threads sharing that
model (torch releases the GIL while it computes), so the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from sceneloc import __version__, images
from sceneloc.api import Grounder, normalize_queries
from sceneloc.errors import ImageTooLargeError, SceneLocError
from sceneloc.schema import LocateResponse
from sceneloc.server.gate import Admission, RequestGate
from sceneloc.server.schemas import (
    ErrorResponse,
    HealthResponse,
    LimitsOut,
    ModelOut,
    ModelsResponse,
    error_response,
)

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
LOCATE_PATH = "/v1/locate"

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "The upload is not a complete image, or a query is empty or blank.",
        413: "The upload is over the size limit, or the image over the pixel limit.",
        422: "A field is missing or malformed (threshold not a number, top_k below 1, ...).",
        503: "The queue is full; the Retry-After header says when to try again.",
    }.items()
}


def create_app(
    grounder: Grounder,
    *,
    max_upload_bytes: int = 20 * 1024 * 1024,
    max_pixels: int | None = None,
    workers: int = 1,
    queue_limit: int = 32,
) -> FastAPI:
    """The API, the web page and the OpenAPI docs, answering with ``grounder``.

    ``max_upload_bytes`` bounds a request body. ``max_pixels`` can only lower the process's
    pixel limit (``SCENELOC_MAX_PIXELS``, which :meth:`Grounder.locate` enforces anyway).
    ``workers`` inference threads share the one model; at most ``queue_limit`` locate
    requests are admitted at once (running and waiting), later ones get 503 at once.
    """
    if workers < 1 or queue_limit < workers:
        raise ValueError(f"need 1 <= workers <= queue_limit, got {workers=} and {queue_limit=}")
    pixel_limit = images.max_pixels()
    if max_pixels is not None:
        pixel_limit = min(max_pixels, pixel_limit)
    admission = Admission(queue_limit, workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = ThreadPoolExecutor(workers, thread_name_prefix="sceneloc-inference")
        try:
            yield
        finally:
            app.state.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="sceneloc",
        version=__version__,
        summary="Find the region of an image that a sentence describes.",
        lifespan=lifespan,
    )
    app.add_middleware(
        RequestGate,
        max_upload_bytes=max_upload_bytes,
        admission=admission,
        gated_path=LOCATE_PATH,
    )
    add_error_handlers(app)

    @app.post(LOCATE_PATH, response_model=LocateResponse, responses=ERRORS)
    async def locate(
        image: Annotated[UploadFile, File(description="The image (JPEG, PNG, WebP, TIFF, ...).")],
        queries: Annotated[
            list[str], Form(description="What to find; repeat the field for several queries.")
        ],
        threshold: Annotated[
            float | None,
            Form(allow_inf_nan=False, description="Minimum score (default: the model's own)."),
        ] = None,
        top_k: Annotated[int, Form(ge=1, description="Ranked candidates kept per query.")] = 5,
    ) -> LocateResponse:
        """Locate each query in the image: the `sceneloc locate --json` object plus timing."""
        texts = normalize_queries(queries)  # fail fast, before decoding
        picture = await asyncio.to_thread(images.load_image, await image.read(), pixel_limit)
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(
            app.state.pool,
            functools.partial(grounder.locate, picture.image, texts, threshold, top_k),
        )
        admission.observe(answer.timing_ms / 1000)
        answer = dataclasses.replace(answer, path=image.filename or None)
        return answer.to_record(timing=True)

    family = grounder.backend.family
    models = ModelsResponse(
        models=[
            ModelOut(
                name=grounder.name,
                backend=family.name,
                tasks=family.task_names(),
                device=str(grounder.device),
                dtype=str(grounder.dtype).removeprefix("torch."),
                default_threshold=grounder.backend.default_threshold,
                capabilities=family.capability_names(),
            )
        ],
        limits=LimitsOut(
            max_upload_bytes=max_upload_bytes,
            max_pixels=pixel_limit,
            workers=workers,
            queue_limit=queue_limit,
        ),
    )

    @app.get("/v1/models")
    async def list_models() -> ModelsResponse:
        """The loaded model, the tasks it serves, what it can do, and the server's limits."""
        return models

    @app.get("/healthz")
    async def healthz() -> HealthResponse:
        """Answers as long as the event loop does, whatever the inference queue holds."""
        return HealthResponse(status="ok")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        if not (STATIC / "index.html").is_file():
            raise HTTPException(404, "the web page is not installed")
        return FileResponse(STATIC / "index.html")

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every error, whoever raises it, becomes ``{"error": "one line"}``."""

    @app.exception_handler(SceneLocError)
    async def user_error(_: Request, exc: SceneLocError) -> JSONResponse:
        return error_response(413 if isinstance(exc, ImageTooLargeError) else 400, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_fields(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(part) for part in error['loc'][1:]) or 'request'}: {error['msg']}"
            for error in exc.errors()
        ]
        return error_response(422, "; ".join(problems))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # The server logs the traceback too: Starlette re-raises after this response.
        logger.error("unexpected error on %s %s: %r", request.method, request.url.path, exc)
        return error_response(500, "internal error")
