"""The Python API: ``sceneloc.load(...)`` and ``Grounder.locate(...)``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import torch

from sceneloc.backends.base import Backend
from sceneloc.candidates import Candidates
from sceneloc.errors import InvalidQueryError, SceneLocError
from sceneloc.images import ImageInput, load_image
from sceneloc.registry import Task, default_model, resolve
from sceneloc.results import LocateAnswer, LocateResult

logger = logging.getLogger(__name__)

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


class Grounder:
    """A loaded model that answers referring queries about images."""

    def __init__(self, backend: Backend, name: str) -> None:
        self.backend = backend
        self.name = name

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backend.dtype

    def __repr__(self) -> str:
        backend = self.backend.family.name
        return f"Grounder({self.name!r}, {backend=}, device={self.device}, dtype={self.dtype})"

    def locate(
        self,
        image: ImageInput,
        queries: str | Sequence[str],
        threshold: float | None = None,
        top_k: int = 5,
        **options,
    ) -> LocateAnswer:
        """Find what each query describes: the answer for the image, one result per query.

        ``image`` is a path, raw bytes or a PIL image. ``threshold`` defaults to the
        backend's own; ``top_k`` caps the ranked candidates kept per query. Extra keyword
        ``options`` go to the backend's ``predict`` for this call (for example
        ``max_pixels=`` for Qwen-VL).
        """
        texts = normalize_queries(queries)
        if top_k < 1:
            raise SceneLocError(f"top_k must be at least 1, got {top_k}")
        threshold = self.backend.default_threshold if threshold is None else float(threshold)
        picture = load_image(image).image
        started = time.perf_counter()
        with torch.inference_mode():
            raw = self.backend.predict(picture, texts, threshold, **options)
        timing_ms = (time.perf_counter() - started) * 1000
        return LocateAnswer(
            image=picture,
            results=tuple(
                LocateResult(text, rank(found, picture.size, threshold, top_k), picture)
                for text, found in zip(texts, raw)
            ),
            model=self.name,
            path=str(image) if isinstance(image, str | os.PathLike) else None,
            timing_ms=timing_ms,
        )


def rank(candidates: Candidates, size: tuple[int, int], threshold: float, top_k: int) -> Candidates:
    """Drop boxes outside the image or under the threshold, clip the rest, best first."""
    width, height = size
    kept = candidates.with_min_score(threshold).inside(width, height)
    return kept.clipped(width, height).top_k(top_k)


def load(
    name_or_path: str | None = None,
    task: Task | str = Task.LOCATE,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    **options,
) -> Grounder:
    """Load a model for ``task`` by short name (``sceneloc models``), hub id or local directory;
    without one, the task's default for the device (:func:`sceneloc.registry.default_model`).

    Extra keyword ``options`` go to the backend (for example ``detector=`` for ``clip-rerank``).
    """
    torch_device = resolve_device(device)
    name = name_or_path or default_model(task, torch_device)
    return Grounder(load_backend(name, task, torch_device, dtype, **options), name)


def load_backend(
    name_or_path: str,
    task: Task | str = Task.LOCATE,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    **options,
) -> Backend:
    """The backend :func:`load` wraps, with its model's settings; pipelines build their
    components with it."""
    model = resolve(name_or_path, task)
    known = model.family.cls.option_names()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise SceneLocError(
            f"{name_or_path} ({model.family.name}) takes no option {', '.join(unknown)}; "
            f"its options: {', '.join(known) or 'none'}"
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
    return backend
