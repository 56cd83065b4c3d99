"""What one kind of training supplies to the loop: a :class:`TrainingTask`.

The loop (:class:`~sceneloc.training.loop.Trainer`) owns what every kind shares: devices and
processes, the optimizer and its schedule, the time budget, checkpoints, metrics, resume.
A task owns what is its own: the model, the data and how a batch is made of it, which
parameters learn at which rate, the loss, validation and how a model is saved.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from sceneloc.training.options import TrainingOptions
from sceneloc.training.state import EpochRecord


class EpochDataset(Protocol):
    """A map-style dataset whose randomness (augmentation, negatives) follows the epoch."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...

    def set_epoch(self, epoch: int) -> None: ...


class TrainingTask(ABC):
    """One kind of training; the loop calls these in the order they are listed."""

    #: Validation metrics, named as in ``metrics.csv``; the first picks ``best/`` (higher is
    #: better).
    metrics: tuple[str, ...] = ()
    #: Whether the model is validated before the first step too (epoch 0), to compare with.
    validate_before_training: bool = False
    #: Whether some parameters may get no gradient in a step (distributed runs then look
    #: for them, which costs a little time).
    unused_parameters: bool = False

    def __init__(self, options: TrainingOptions) -> None:
        self.options = options

    @abstractmethod
    def prepare(self) -> None:
        """Read the training data and check its files, so a mistake shows now, not hours
        into the run. Raises :class:`~sceneloc.training.options.TrainingError`."""

    def check_resume(self, saved: dict[str, Any]) -> None:  # noqa: B027 (an optional hook)
        """Refuse to resume a run (``saved``: the options it started with) whose saved state
        these options cannot load; raises :class:`~sceneloc.training.options.TrainingError`."""

    @abstractmethod
    def build_model(self, resume_from: Path | None) -> torch.nn.Module:
        """A fresh model, or the one saved in ``resume_from`` (a run's ``last/``)."""

    @abstractmethod
    def dataset(self) -> EpochDataset:
        """The training items (after :meth:`build_model`: they may depend on the model)."""

    @abstractmethod
    def collator(self) -> Callable[[list[Any]], dict[str, torch.Tensor]]:
        """What makes one batch of dataset items (a picklable object: data-loading workers
        get a copy)."""

    def parameter_groups(
        self, model: torch.nn.Module
    ) -> list[tuple[list[torch.nn.Parameter], float]]:
        """The trainable parameters, each group with its learning-rate scale."""
        return [([p for p in model.parameters() if p.requires_grad], 1.0)]

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one batch (the model is the one the loop prepared for its devices)."""

    @abstractmethod
    def queries_in(self, batch: dict[str, torch.Tensor]) -> int:
        """How many examples (queries) the batch holds, for the per-process reports."""

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """:attr:`metrics` on the validation data (on the main process, with
        ``options.val`` given); may also fit what the model learns from validation data."""
        raise NotImplementedError

    @abstractmethod
    def save(self, model: torch.nn.Module, directory: Path) -> None:
        """Write the model so that :meth:`build_model` (and its users) can load it."""

    def finish(self, records: list[EpochRecord]) -> None:  # noqa: B027 (an optional hook)
        """Called on the main process when training ends, with this run's records (a
        resumed run's earlier epochs are in ``metrics.csv``)."""
