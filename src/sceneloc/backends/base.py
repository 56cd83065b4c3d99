"""The contract every backend fulfils, and helpers they share."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import torch
from PIL import Image

from sceneloc.candidates import Candidates
from sceneloc.errors import ModelNotFoundError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Backend(ABC):
    """A grounding model behind a uniform ``predict``.

    Backends only run their model; the caller (:class:`sceneloc.api.Grounder`) loads the
    image, validates queries, clips boxes to the image, applies ``top_k`` and ranks.
    """

    backend_name: ClassVar[str]
    #: Score a candidate needs to be reported when the user gives no threshold.
    default_threshold: ClassVar[float] = 0.3
    #: Whether the model gives sound results in bfloat16/float16 on a GPU.
    half_precision: ClassVar[bool] = True

    def __init__(self, checkpoint: str, device: torch.device, dtype: torch.dtype) -> None:
        self.checkpoint = checkpoint
        self.device = device
        self.dtype = dtype

    @abstractmethod
    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        """The candidates of each query, each query answered as if asked alone.

        Boxes are in pixels of ``image``; they may be unordered and reach past its edges.
        Candidates scoring below ``threshold`` may be left out.
        """


def from_pretrained(loader: Callable[..., T], checkpoint: str, **kwargs: Any) -> T:
    """Call a transformers ``from_pretrained``, turning a missing checkpoint into a clear error."""
    try:
        return loader(checkpoint, **kwargs)
    except OSError as exc:
        logger.debug("loading %s failed: %s", checkpoint, exc)
        raise ModelNotFoundError(
            f"cannot load {checkpoint!r}: it is neither a local directory with the model's files "
            "nor a hub id that could be downloaded (offline? pass a local path, or set "
            "HF_HUB_OFFLINE=1 to use the hub cache)"
        ) from None


def to_model(
    inputs: Mapping[str, torch.Tensor], device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Processor outputs moved to the model's device, floating ones (pixels) to its dtype."""
    return {
        key: value.to(device=device, dtype=dtype if value.is_floating_point() else None)
        for key, value in inputs.items()
    }
