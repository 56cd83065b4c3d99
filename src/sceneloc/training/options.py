"""Options every kind of training takes; a task's options add its own fields and presets.

Values come in three layers: the dataclass defaults, then a named preset, then what the user
gave (flags or a YAML config file with the same keys). :meth:`TrainingOptions.build` joins
them and refuses what could only fail later, deep inside PyTorch.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sceneloc.errors import SceneLocError
from sceneloc.training.schedule import SCHEDULES

if TYPE_CHECKING:
    from sceneloc.training.task import TrainingTask


Options = TypeVar("Options", bound="TrainingOptions")

#: ``precision`` values: mixed precision as Accelerate runs it (``auto`` picks).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class TrainingError(SceneLocError):
    """Options that cannot train a model (unknown preset, missing word vectors, ...)."""


@dataclass
class TrainingOptions:
    """The loop's options: data, output folder, optimisation, schedule, budget, resume."""

    #: Ready configurations of a task; explicit options override them.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    data: str
    out: str
    val: str | None = None
    preset: str | None = None
    epochs: int = 10
    max_minutes: float | None = None
    batch_size: int = 8
    #: Batches whose gradients are summed before each optimizer step (a batch of 1 with
    #: ``grad_accum`` 8 steps like a batch of 8, in the memory of one).
    grad_accum: int = 1
    #: ``auto`` (bf16 on GPUs that have it, else fp32), ``fp32``, ``bf16`` or ``fp16`` (GPUs).
    precision: str = "auto"
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    lr_schedule: str = "cosine"
    grad_clip: float = 1.0
    seed: int = 0
    num_workers: int = 0
    val_limit: int | None = 2000
    resume: bool = False

    @classmethod
    def build(cls: type[Options], preset: str | None = None, **explicit: Any) -> Options:
        """Defaults, then the preset, then the options the user gave (``None`` = not given)."""
        values: dict[str, Any] = {}
        if preset is not None:
            if preset not in cls.presets:
                raise TrainingError(
                    f"unknown preset {preset!r}; choose one of {', '.join(cls.presets)}"
                )
            values.update(cls.presets[preset])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(explicit) - known)
        if unknown:
            raise TrainingError(f"unknown training option(s): {', '.join(unknown)}")
        values.update({k: v for k, v in explicit.items() if v is not None})
        for required in ("data", "out"):
            if not values.get(required):
                raise TrainingError(f"training needs {required!r} (--{required})")
        types = typing.get_type_hints(cls)
        options = cls(preset=preset, **{k: _coerce(k, v, types[k]) for k, v in values.items()})
        options.check()
        return options

    def check(self) -> None:
        """Refuse settings the loop cannot run; tasks add their own checks."""
        if self.lr_schedule not in SCHEDULES:
            raise TrainingError(
                f"lr_schedule must be one of {', '.join(SCHEDULES)}, not {self.lr_schedule!r}"
            )
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be at least 1")
        if self.precision not in PRECISIONS:
            raise TrainingError(
                f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}"
            )

    def check_model_sizes(self, *positive: str) -> None:
        """Refuse a transformer width its heads cannot split, and sizes (the ``positive``
        option names) below 1; for the tasks whose models have them."""
        hidden, heads = self.hidden_size, self.attention_heads
        if hidden % heads:
            raise TrainingError(
                f"hidden_size ({hidden}) must be a multiple of attention_heads ({heads})"
            )
        for name in positive:
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be at least 1")

    def make_task(self) -> TrainingTask:
        """The task these options train (each task's options say which)."""
        raise NotImplementedError


_TYPES = (bool, int, float, str)


def _coerce(name: str, value: Any, declared: Any) -> Any:
    """A config value as its option's type (YAML reads ``3e-4`` as a string, for one)."""
    kind = next((t for t in _TYPES if t is declared or t in typing.get_args(declared)), None)
    if kind is None or type(value) is kind:
        return value
    try:
        if kind is bool:
            if str(value).lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return str(value).lower() in ("true", "1", "yes")
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise TrainingError(f"option {name!r} must be {kind.__name__}, got {value!r}") from None
