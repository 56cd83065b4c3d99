"""The contract every backend fulfils, and helpers they share."""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from sceneloc.boxes import Box
from sceneloc.candidates import Candidates
from sceneloc.errors import ModelNotFoundError, TaskNotSupportedError

if TYPE_CHECKING:
    from typing_extensions import Self

    from sceneloc.registry import BackendFamily

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Caption:
    """What a backend says of one region: its box in pixels, the words, and their score.

    ``score`` is the caption's length-normalised log-probability (mean over its tokens)
    where the model gives token scores, else ``None``.
    """

    box: Box
    caption: str
    score: float | None


class Backend(ABC):
    """A model behind a uniform method per task: ``predict`` (locate), ``describe``.

    Built two ways: :meth:`from_pretrained` loads a checkpoint; ``__init__`` wraps models
    already in memory (training validates the very object it trains), running them where
    they are. Backends only run their model; the callers (:class:`sceneloc.api.Grounder`,
    :class:`sceneloc.api.Describer`) load the image, validate queries and boxes, clip boxes
    to the image, apply ``top_k`` and rank. A family implements the methods of the tasks
    it registers for.
    """

    #: The registry entry of this backend's family, set by ``register_backend``.
    family: ClassVar[BackendFamily]
    #: The side, in pixels, the model reads images at: ``tiles="auto"`` tiles an image much
    #: larger, in tiles this size. ``None``: the family is never tiled by ``auto``.
    input_side: int | None = None

    def __init__(self, model: nn.Module, checkpoint: str | None) -> None:
        """``model`` is the one whose device and dtype inputs are moved to; subclasses put
        their models in inference mode. ``checkpoint`` is where they came from, if known."""
        parameter = next(model.parameters())
        self.device = parameter.device
        self.dtype = parameter.dtype
        self.checkpoint = checkpoint
        #: Score a candidate needs to be reported when the user gives no threshold.
        self.default_threshold = self.family.settings.default_threshold

    @classmethod
    @abstractmethod
    def from_pretrained(
        cls, checkpoint: str, device: torch.device, dtype: torch.dtype, **options: Any
    ) -> Self:
        """Load ``checkpoint`` onto ``device`` in ``dtype``; ``options`` are the family's own."""

    @classmethod
    def option_names(cls) -> list[str]:
        """The options :meth:`from_pretrained` takes: its own keywords and, where it passes
        ``**options`` on, the keyword parameters of ``__init__`` that have defaults (the
        models themselves have none)."""
        names: set[str] = set()
        for function, wrapped in ((cls.from_pretrained, ("checkpoint", "device", "dtype")),
                                  (cls.__init__, ("self", "checkpoint"))):  # fmt: skip
            parameters = inspect.signature(function).parameters.values()
            names |= {
                p.name
                for p in parameters
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.name not in wrapped
                and (function is cls.from_pretrained or p.default is not p.empty)
            }
            if not any(p.kind is p.VAR_KEYWORD for p in parameters):
                break
        return sorted(names)

    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        """The candidates of each query, each query answered as if asked alone (locate).

        Boxes are in pixels of ``image``; they may be unordered and reach past its edges.
        Candidates scoring below ``threshold`` may be left out.
        """
        raise TaskNotSupportedError(f"{self.family.name} models do not locate")

    def predict_tiles(
        self, tiles: list[Image.Image], queries: list[str], threshold: float, **options: Any
    ) -> list[list[Candidates]]:
        """:meth:`predict` on each tile of a large image: per tile, each query's candidates in
        the tile's pixels. Families that can batch images override it; this one loops."""
        return [self.predict(tile, queries, threshold, **options) for tile in tiles]

    def describe(
        self,
        image: Image.Image,
        boxes: np.ndarray | None,
        *,
        max_new_tokens: int,
        num_beams: int,
    ) -> list[Caption]:
        """One caption per row of ``boxes`` (``(n, 4)`` pixels inside ``image``), in order,
        each region described as if asked alone; with ``boxes=None`` (families with
        :attr:`~sceneloc.registry.Capability.DENSE_CAPTIONS`), the regions the model finds,
        each with its own box."""
        raise TaskNotSupportedError(f"{self.family.name} models do not describe regions")


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


def warn_if_truncated(tokenizer: Any, queries: list[str], limit: int, model: str | None) -> None:
    """Say that a query is longer than the model reads, rather than silently answer a
    shorter one."""
    lengths = [len(ids) for ids in tokenizer(queries, verbose=False)["input_ids"]]
    for query, length in zip(queries, lengths):
        if length > limit:
            logger.warning(
                "query %r is %d tokens long; %s reads the first %d only",
                query,
                length,
                model,
                limit,
            )


def to_model(
    inputs: Mapping[str, torch.Tensor], device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Processor outputs moved to the model's device, floating ones (pixels) to its dtype."""
    return {
        key: value.to(device=device, dtype=dtype if value.is_floating_point() else None)
        for key, value in inputs.items()
    }
