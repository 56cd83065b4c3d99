"""The Python API: ``sceneloc.load(...)``, ``Grounder.locate(...)`` and
``Describer.describe(...)``."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Literal, overload

import numpy as np
import torch
from PIL import Image

from sceneloc.backends.base import Backend
from sceneloc.boxes import Box
from sceneloc.calibration import CalibratedBackend, calibration_for
from sceneloc.candidates import Candidates
from sceneloc.errors import (
    CalibrationError,
    InvalidBoxError,
    InvalidQueryError,
    SceneLocError,
)
from sceneloc.images import ImageInput, load_image
from sceneloc.registry import Capability, ModelSettings, Task, as_task, default_model, resolve
from sceneloc.results import DescribeAnswer, LocateAnswer, LocateResult, RegionDescription
from sceneloc.targets import choose_targets
from sceneloc.tiling import (
    TileSetting,
    Tiling,
    check_tiling,
    parse_overlap,
    parse_tiles,
    predict_tiled,
    tile_side,
)

logger = logging.getLogger(__name__)

#: A backend's ``predict`` with a call's options bound: (image, queries, threshold) ->
#: the candidates of each query.
Predict = Callable[[Image.Image, list[str], float], list[Candidates]]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise SceneLocError(
            f"unknown device {device!r} (use auto, cpu, cuda, cuda:N or mps)"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SceneLocError("device 'cuda' was asked for but this machine has no usable CUDA GPU")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise SceneLocError("device 'mps' was asked for but it is not available here")
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device, half_ok: bool) -> torch.dtype:
    """``auto``: float32 on CPU; bfloat16 (else float16) on a GPU when the model tolerates it."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cpu" or not half_ok:
            return torch.float32
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    try:
        return DTYPES[dtype]
    except KeyError:
        raise SceneLocError(f"unknown dtype {dtype!r} (use auto, {', '.join(DTYPES)})") from None


def normalize_queries(queries: str | Sequence[str]) -> list[str]:
    """One query or several, each stripped; empty or blank ones are refused."""
    items = [queries] if isinstance(queries, str) else list(queries)
    if not items:
        raise InvalidQueryError("no query given")
    cleaned = []
    for index, query in enumerate(items):
        if not isinstance(query, str):
            raise InvalidQueryError(f"query {index + 1} is not text: {query!r}")
        if not query.strip():
            raise InvalidQueryError(f"query {index + 1} is empty or blank")
        cleaned.append(" ".join(query.split()))
    return cleaned


def parse_box(text: str) -> Box:
    """``"x1,y1,x2,y2"`` (the CLI's ``--box``, the server's ``box`` field) as four floats."""
    parts = [part.strip() for part in str(text).split(",")]
    try:
        box = [float(part) for part in parts]
    except ValueError:
        raise InvalidBoxError(f"box {text!r} is not four numbers x1,y1,x2,y2") from None
    if len(box) != 4:
        raise InvalidBoxError(f"box {text!r} has {len(box)} values, not four (x1,y1,x2,y2)")
    return box


def region_boxes(boxes: Sequence[Sequence[float] | str], width: int, height: int) -> np.ndarray:
    """The boxes to describe as an ``(n, 4)`` array clipped to the image; refuses a box that
    is not four finite numbers, is empty (``x2 <= x1`` or ``y2 <= y1``) or lies wholly
    outside the image."""
    rows = []
    for index, box in enumerate(boxes, start=1):
        values = parse_box(box) if isinstance(box, str) else list(box)
        if len(values) != 4:
            raise InvalidBoxError(f"box {index} has {len(values)} values, not four")
        try:
            x1, y1, x2, y2 = (float(v) for v in values)
        except (TypeError, ValueError):
            raise InvalidBoxError(f"box {index} is not four numbers: {values!r}") from None
        shown = ", ".join(f"{v:g}" for v in (x1, y1, x2, y2))
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise InvalidBoxError(f"box {index} ({shown}) is not four finite numbers")
        if x2 <= x1 or y2 <= y1:
            raise InvalidBoxError(f"box {index} ({shown}) is empty: need x2 > x1 and y2 > y1")
        clipped = [min(max(x1, 0), width), min(max(y1, 0), height),
                   min(max(x2, 0), width), min(max(y2, 0), height)]  # fmt: skip
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            raise InvalidBoxError(
                f"box {index} ({shown}) lies wholly outside the {width}x{height} image"
            )
        rows.append(clipped)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


class TaskModel:
    """A loaded model for one task; :class:`Grounder` and :class:`Describer` are its kinds.

    Any task's object can be made from another's ``backend`` when its family serves both
    (``Describer(grounder.backend, grounder.name)``), sharing the weights in memory.
    """

    task: Task

    def __init__(self, backend: Backend, name: str, settings: ModelSettings | None = None) -> None:
        if self.task not in backend.family.tasks:
            raise SceneLocError(f"{name} ({backend.family.name}) does not {self.task.value}")
        self.backend = backend
        self.name = name
        self.settings = settings or backend.family.settings

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backend.dtype

    def __repr__(self) -> str:
        backend = self.backend.family.name
        kind = type(self).__name__
        return f"{kind}({self.name!r}, {backend=}, device={self.device}, dtype={self.dtype})"


class Grounder(TaskModel):
    """A loaded model that answers referring queries about images."""

    task = Task.LOCATE

    def locate(
        self,
        image: ImageInput,
        queries: str | Sequence[str],
        threshold: float | None = None,
        top_k: int = 5,
        *,
        tiles: TileSetting | str = "off",
        tile_overlap: float = 0.2,
        events: bool = False,
        **options,
    ) -> LocateAnswer:
        """Find what each query describes: the answer for the image, one result per query.

        ``image`` is a path, raw bytes or a PIL image. ``threshold`` defaults to the
        backend's own; ``top_k`` caps the ranked candidates kept per query. ``tiles``
        (``"auto"``, ``"off"`` or a tile side in pixels) and ``tile_overlap`` (a fraction of
        the tile) look at a large image tile by tile as well as whole. ``events`` answers a
        query naming several participants with the box around all of them, each
        participant's box in the result's ``parts``. Extra keyword ``options`` go to the
        backend's ``predict`` for this call (for example ``max_pixels=`` for Qwen-VL).
        """
        texts = normalize_queries(queries)
        if top_k < 1:
            raise SceneLocError(f"top_k must be at least 1, got {top_k}")
        tiling_setting = parse_tiles(tiles)
        overlap = parse_overlap(tile_overlap)
        threshold = self.backend.default_threshold if threshold is None else float(threshold)
        picture = load_image(image).image
        started = time.perf_counter()
        with torch.inference_mode():
            predict = self._predictor(tiling_setting, overlap, options)
            if events:
                results = self._events(predict, picture, texts, threshold, top_k)
            else:
                results = [
                    self._result(text, found, picture, threshold, top_k)
                    for text, found in zip(texts, predict(picture, texts, threshold))
                ]
        timing_ms = (time.perf_counter() - started) * 1000
        return LocateAnswer(
            image=picture,
            results=tuple(results),
            model=self.name,
            path=str(image) if isinstance(image, str | os.PathLike) else None,
            timing_ms=timing_ms,
        )

    def _predictor(self, tiles: TileSetting, overlap: float, options: dict) -> Predict:
        """The backend's ``predict`` with this call's options; with ``tiles``, an image larger
        than a tile is also looked at tile by tile (:func:`sceneloc.tiling.predict_tiled`)."""
        backend = self.backend
        setting = check_tiling(tiles, backend)

        def predict(image, queries, threshold):
            return backend.predict(image, queries, threshold, **options)

        if setting == "off":
            return predict
        if setting == "auto" and backend.input_side is None:
            logger.info("%s states no input side: tiles=auto looks at images whole", self.name)
            return predict

        def predict_tiles(tiles, queries, threshold):
            return backend.predict_tiles(tiles, queries, threshold, **options)

        def tiled(image, queries, threshold):
            side = tile_side(setting, *image.size, backend.input_side or 0)
            if side is None:
                return predict(image, queries, threshold)
            how = Tiling(side, overlap, backend.default_threshold)
            return predict_tiled(image, queries, threshold, how, predict, predict_tiles)

        return tiled

    def _result(
        self, text: str, found: Candidates, image: Image.Image, threshold: float, top_k: int
    ) -> LocateResult:
        """The query's result: its ``top_k`` candidates, and its targets, every candidate
        kept from a family that names its own, else as many as the query asks for."""
        kept = rank(found, image.size, threshold, len(found))
        own = Capability.TARGETS in self.backend.family.capabilities
        targets = kept if own else choose_targets(text, kept, threshold)
        return LocateResult(text, kept.top_k(top_k), image, targets=targets)

    def _events(
        self, predict: Predict, image, texts: list[str], threshold: float, top_k: int
    ) -> list[LocateResult]:
        """Event boxes (:func:`sceneloc.events.locate_events`); a family that learnt them
        keeps its own box where it holds the assembled participants."""
        from sceneloc.events import locate_events  # it builds on this module's ``rank``

        learnt = Capability.EVENT_BOXES in self.backend.family.capabilities
        return locate_events(predict, image, texts, threshold, top_k, learnt=learnt)


class Describer(TaskModel):
    """A loaded model that says in words what regions of an image show."""

    task = Task.DESCRIBE

    def describe(
        self,
        image: ImageInput,
        boxes: Sequence[Sequence[float] | str] | np.ndarray | None = None,
        *,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
    ) -> DescribeAnswer:
        """One description per box (``[x1, y1, x2, y2]`` pixels or ``"x1,y1,x2,y2"``), in
        order; without ``boxes``, the regions the model finds (dense captions), each with
        its own box.

        Boxes reaching past the image are clipped; malformed ones, empty ones and ones
        wholly outside raise :class:`~sceneloc.errors.InvalidBoxError`. Generation defaults
        to the model card's (``num_beams``, ``max_new_tokens``).
        """
        picture = load_image(image).image
        regions = None if boxes is None else region_boxes(boxes, *picture.size)
        if regions is None and Capability.DENSE_CAPTIONS not in self.backend.family.capabilities:
            raise InvalidBoxError(
                f"{self.name} describes given regions only: pass boxes (--box x1,y1,x2,y2)"
            )
        generation = {
            "max_new_tokens": self.settings.max_new_tokens if max_new_tokens is None
                              else max_new_tokens,
            "num_beams": self.settings.num_beams if num_beams is None else num_beams,
        }  # fmt: skip
        for key, value in generation.items():
            if value < 1:
                raise SceneLocError(f"{key} must be at least 1, got {value}")
        started = time.perf_counter()
        if regions is not None and not len(regions):
            captions = []
        else:
            with torch.inference_mode():
                captions = self.backend.describe(picture, regions, **generation)
        timing_ms = (time.perf_counter() - started) * 1000
        width, height = picture.size
        described = []
        for caption in captions:
            box = [float(v) for v in np.clip(caption.box, 0, [width, height, width, height])]
            described.append(RegionDescription(box, caption.caption, caption.score, picture))
        return DescribeAnswer(
            image=picture,
            regions=tuple(described),
            model=self.name,
            path=str(image) if isinstance(image, str | os.PathLike) else None,
            timing_ms=timing_ms,
        )


#: The object :func:`load` returns for each task.
TASK_MODELS: dict[Task, type[TaskModel]] = {Task.LOCATE: Grounder, Task.DESCRIBE: Describer}


def rank(candidates: Candidates, size: tuple[int, int], threshold: float, top_k: int) -> Candidates:
    """Drop boxes outside the image or under the threshold, clip the rest, best first."""
    width, height = size
    kept = candidates.with_min_score(threshold).inside(width, height)
    return kept.clipped(width, height).top_k(top_k)


@overload
def load(
    name_or_path: str | None = None,
    task: Literal[Task.LOCATE, "locate"] = ...,
    device: str | torch.device = ...,
    dtype: str | torch.dtype = ...,
    calibration: str | os.PathLike | None = ...,
    **options,
) -> Grounder: ...
@overload
def load(
    name_or_path: str | None = None,
    task: Literal[Task.DESCRIBE, "describe"] = ...,
    device: str | torch.device = ...,
    dtype: str | torch.dtype = ...,
    **options,
) -> Describer: ...
def load(
    name_or_path: str | None = None,
    task: Task | str = Task.LOCATE,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    calibration: str | os.PathLike | None = None,
    **options,
) -> TaskModel:
    """Load a model for ``task`` by short name (``sceneloc models``), hub id or local directory;
    without one, the task's default for the device (:func:`sceneloc.registry.default_model`).
    ``task="locate"`` gives a :class:`Grounder`, ``task="describe"`` a :class:`Describer`.

    ``calibration`` is a file from ``sceneloc calibrate``: scores become the probability that
    the referent is there and the default threshold 0.5 (a model directory ``sceneloc
    calibrate`` wrote is calibrated without it). Extra keyword ``options`` go to the backend
    (for example ``detector=`` for ``clip-rerank``).
    """
    task = as_task(task)
    torch_device = resolve_device(device)
    name = name_or_path or default_model(task, torch_device)
    settings = resolve(name, task).settings
    backend = load_backend(name, task, torch_device, dtype, calibration=calibration, **options)
    return TASK_MODELS[task](backend, name, settings)


def load_backend(
    name_or_path: str,
    task: Task | str = Task.LOCATE,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    calibration: str | os.PathLike | None = None,
    **options,
) -> Backend:
    """The backend :func:`load` wraps, with its model's settings (and, to locate, its
    calibration: ``calibration`` or the model directory's own); pipelines build their
    components with it."""
    task = as_task(task)
    model = resolve(name_or_path, task)
    known = model.family.cls.option_names()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise SceneLocError(
            f"{name_or_path} ({model.family.name}) takes no option {', '.join(unknown)}; "
            f"its options: {', '.join(known) or 'none'}"
        )
    if calibration is not None and task is not Task.LOCATE:
        raise CalibrationError(f"a calibration file is for locating, not to {task.value}")
    fitted = (
        calibration_for(name_or_path, model.checkpoint, model.family.name, calibration)
        if task is Task.LOCATE
        else None
    )
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device, model.settings.half_precision)
    logger.info(
        "loading %s (%s) on %s as %s", name_or_path, model.family.name, torch_device, torch_dtype
    )
    backend = model.family.cls.from_pretrained(
        model.checkpoint, torch_device, torch_dtype, **options
    )
    backend.default_threshold = model.settings.default_threshold
    if fitted is not None:
        logger.info("scores calibrated by %s", calibration or fitted.model)
        return CalibratedBackend(backend, fitted)  # type: ignore[return-value]
    return backend
