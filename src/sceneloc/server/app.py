"""The HTTP API: a thin FastAPI layer over :meth:`sceneloc.Grounder.locate` and
:meth:`sceneloc.Describer.describe`.

The models are loaded by the caller, once, before the app exists. Each request's image is
decoded in a thread and its inference runs in a pool of ``workers`` threads sharing the
models (torch releases the GIL while it computes), so the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException

from sceneloc import __version__, images
from sceneloc.api import Describer, Grounder, TaskModel, normalize_queries, parse_box
from sceneloc.errors import ImageTooLargeError, InvalidOptionError, SceneLocError
from sceneloc.registry import Task
from sceneloc.results import DescribeAnswer, LocateAnswer
from sceneloc.schema import DescribeResponse, LocateResponse
from sceneloc.server.gate import Admission, RequestGate
from sceneloc.server.schemas import (
    ErrorResponse,
    HealthResponse,
    LimitsOut,
    ModelOut,
    ModelsResponse,
    error_response,
)
from sceneloc.tiling import check_tiling, parse_tiles

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
LOCATE_PATH = "/v1/locate"
DESCRIBE_PATH = "/v1/describe"
IMAGE_HELP = "The image (JPEG, PNG, WebP, TIFF, ...)."

Answer = TypeVar("Answer", LocateAnswer, DescribeAnswer)


def documented_errors(own: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """A model endpoint's error statuses for OpenAPI: its own cases (bad input, bad fields),
    and the upload limits and the queue, which every one shares."""
    shared = {
        413: "The upload is over the size limit, or the image over the pixel limit.",
        503: "The queue is full; the Retry-After header says when to try again.",
    }
    return {
        status: {"model": ErrorResponse, "description": description}
        for status, description in sorted((own | shared).items())
    }


LOCATE_ERRORS = documented_errors({
    400: "The upload is not a complete image, or a query is empty or blank.",
    422: "A field is missing or malformed (threshold not a number, top_k below 1, tiles not "
    "auto, off or a positive size, tile_overlap outside [0, 1), ...).",
})  # fmt: skip
DESCRIBE_ERRORS = documented_errors({
    400: "The upload is not a complete image, or a box is malformed (not four numbers, NaN), "
    "empty (x2 <= x1 or y2 <= y1) or wholly outside the image, or no box was given to a model "
    "that does not find regions itself.",
    422: "A field is malformed (max_new_tokens or beams not a whole number of at least 1).",
    501: "No model here describes regions: the server was started without --describe-model "
    "and its --model does not describe.",
})  # fmt: skip


def create_app(
    grounder: Grounder,
    *,
    describer: Describer | None = None,
    max_upload_bytes: int = 20 * 1024 * 1024,
    max_pixels: int | None = None,
    workers: int = 1,
    queue_limit: int = 32,
) -> FastAPI:
    """The API, the web page and the OpenAPI docs, locating with ``grounder`` and describing
    with ``describer``: by default the grounder's own model where its family describes too
    (one model in memory), else none, and ``/v1/describe`` answers 501.

    ``max_upload_bytes`` bounds a request body. ``max_pixels`` can only lower the process's
    pixel limit (``SCENELOC_MAX_PIXELS``, which :meth:`Grounder.locate` enforces anyway).
    ``workers`` inference threads share the models; at most ``queue_limit`` locate and
    describe requests are admitted at once (running and waiting), later ones get 503 at once.
    """
    if workers < 1 or queue_limit < workers:
        raise ValueError(f"need 1 <= workers <= queue_limit, got {workers=} and {queue_limit=}")
    pixel_limit = images.max_pixels()
    if max_pixels is not None:
        pixel_limit = min(max_pixels, pixel_limit)
    admission = Admission(queue_limit, workers)
    if describer is None and Task.DESCRIBE in grounder.backend.family.tasks:
        describer = Describer(grounder.backend, grounder.name, grounder.settings)

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
        summary="Find the region of an image that a sentence describes, and describe regions "
        "in words.",
        lifespan=lifespan,
    )
    app.add_middleware(
        RequestGate,
        max_upload_bytes=max_upload_bytes,
        admission=admission,
        gated_paths=(LOCATE_PATH, DESCRIBE_PATH),
    )
    add_error_handlers(app)

    async def decode(upload: UploadFile) -> Image.Image:
        picture = await asyncio.to_thread(images.load_image, await upload.read(), pixel_limit)
        return picture.image

    async def infer(ask: Callable[[], Answer], upload: UploadFile) -> Answer:
        """Run ``ask`` in the inference pool; its answer names the uploaded file."""
        answer = await asyncio.get_running_loop().run_in_executor(app.state.pool, ask)
        admission.observe(answer.timing_ms / 1000)
        return dataclasses.replace(answer, path=upload.filename or None)

    @app.post(LOCATE_PATH, response_model=LocateResponse, responses=LOCATE_ERRORS)
    async def locate(
        image: Annotated[UploadFile, File(description=IMAGE_HELP)],
        queries: Annotated[
            list[str], Form(description="What to find; repeat the field for several queries.")
        ],
        threshold: Annotated[
            float | None,
            Form(allow_inf_nan=False, description="Minimum score (default: the model's own)."),
        ] = None,
        top_k: Annotated[int, Form(ge=1, description="Ranked candidates kept per query.")] = 5,
        tiles: Annotated[
            str,
            Form(
                description="Look at a large image tile by tile as well as whole: auto (when it "
                "is much larger than the model's input), off, or a tile side in pixels (422 on a "
                "model not safe to tile; auto then looks at the image whole)."
            ),
        ] = "off",
        tile_overlap: Annotated[
            float,
            Form(ge=0, lt=1, description="How much neighbouring tiles overlap (fraction)."),
        ] = 0.2,
        events: Annotated[
            bool,
            Form(
                description="Answer a query naming several participants with the box around "
                "all of them, each participant's box in 'parts'."
            ),
        ] = False,
    ) -> LocateResponse:
        """Locate each query in the image: the `sceneloc locate --json` object plus timing."""
        texts = normalize_queries(queries)  # fail fast, before decoding
        try:
            setting = check_tiling(parse_tiles(tiles), grounder.backend)
            how = {"tiles": setting, "tile_overlap": tile_overlap, "events": events}
        except InvalidOptionError as exc:
            raise HTTPException(422, str(exc)) from None
        picture = await decode(image)
        answer = await infer(
            lambda: grounder.locate(picture, texts, threshold, top_k, **how), image
        )
        return answer.to_record(timing=True)

    @app.post(DESCRIBE_PATH, response_model=DescribeResponse, responses=DESCRIBE_ERRORS)
    async def describe(
        image: Annotated[UploadFile, File(description=IMAGE_HELP)],
        box: Annotated[
            list[str] | None,
            Form(
                description="A region as x1,y1,x2,y2 in pixels; repeat the field for several. "
                "None: the regions the model finds (dense captions)."
            ),
        ] = None,
        max_new_tokens: Annotated[
            int | None, Form(ge=1, description="Longest caption in tokens (default: the model's).")
        ] = None,
        beams: Annotated[
            int | None, Form(ge=1, description="Beam search width (default: the model card's).")
        ] = None,
    ) -> DescribeResponse:
        """Describe each box of the image (or the regions the model finds): the `sceneloc
        describe --json` object plus timing."""
        if describer is None:
            raise HTTPException(
                501,
                f"{grounder.name} does not describe regions; start the server with "
                "--describe-model NAME to serve /v1/describe",
            )
        boxes = None if box is None else [parse_box(text) for text in box]  # fail fast
        picture = await decode(image)
        answer = await infer(
            lambda: describer.describe(
                picture, boxes, max_new_tokens=max_new_tokens, num_beams=beams
            ),
            image,
        )
        return answer.to_record(timing=True)

    shared = describer is not None and describer.backend is grounder.backend
    served = [model_out(grounder, [Task.LOCATE, Task.DESCRIBE] if shared else [Task.LOCATE])]
    if describer is not None and not shared:
        served.append(model_out(describer, [Task.DESCRIBE]))
    models = ModelsResponse(
        models=served,
        limits=LimitsOut(
            max_upload_bytes=max_upload_bytes,
            max_pixels=pixel_limit,
            workers=workers,
            queue_limit=queue_limit,
        ),
    )

    @app.get("/v1/models")
    async def list_models() -> ModelsResponse:
        """The loaded models, the tasks each serves here, what each can do, and the server's
        limits."""
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


def model_out(task_model: TaskModel, serves: list[Task]) -> ModelOut:
    family = task_model.backend.family
    return ModelOut(
        name=task_model.name,
        backend=family.name,
        tasks=family.task_names(),
        serves=[task.value for task in serves],
        device=str(task_model.device),
        dtype=str(task_model.dtype).removeprefix("torch."),
        default_threshold=task_model.backend.default_threshold,
        capabilities=family.capability_names(),
    )


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
