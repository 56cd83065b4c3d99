"""Which backend serves which model for which task: short names, hub ids, local directories.

A backend family registers itself with :func:`register_backend`, declaring the tasks it
serves, the ``model_type`` values of the checkpoints it reads, what it can do and its
ready-made models. :func:`resolve` turns what a user typed, and the task asked for, into
the family and the checkpoint to load, the way transformers' Auto classes read
``model_type`` from ``config.json``. ``sceneloc models`` and ``GET /v1/models`` both print
from here.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sceneloc.errors import (
    ModelNotFoundError,
    SceneLocError,
    TaskNotSupportedError,
    UnsupportedModelError,
)

if TYPE_CHECKING:
    from sceneloc.backends.base import Backend

logger = logging.getLogger(__name__)


class Task(str, Enum):
    """What a model is asked to do."""

    #: Sentence in, the region of the image it describes out.
    LOCATE = "locate"
    #: Region in (or none: the model proposes them), a sentence saying what it shows out.
    DESCRIBE = "describe"


class Capability(str, Enum):
    """What a backend family can do, beyond answering its tasks; the value is what users read."""

    #: The image's features are computed once per call and shared by all its queries.
    IMAGE_ENCODED_ONCE = "image encoded once per call"
    #: Several queries go through the model together, each answered as if asked alone.
    QUERIES_BATCHED = "queries batched"
    #: Several scored candidate boxes per query, so the right one can be found second.
    RANKED_CANDIDATES = "ranked candidates"
    #: One box per query, scored by a calibrated probability that the referent is there.
    PRESENCE_SCORE = "calibrated presence score"
    #: A candidate's label is the words of the query it matched, not the whole query.
    PHRASE_LABELS = "phrase labels"
    #: A box's score does not depend on the image's other boxes, so tiles' answers can merge.
    SAFE_TO_TILE = "safe to tile"
    #: Trained on boxes around the several things a query names ("the circle inside the
    #: square"), so it answers an event query (``locate(..., events=True)``) itself.
    EVENT_BOXES = "learnt event boxes"
    #: Says itself which boxes are the query's targets (several, or none): every candidate
    #: above the threshold is one, where other families' are chosen by what the query asks
    #: (:mod:`sceneloc.targets`).
    TARGETS = "own targets"
    #: ``sceneloc train`` trains this family's models.
    TRAINABLE = "trainable"
    #: Each candidate comes with its mask (the object's own pixels): cut-outs, RLE in the JSON.
    MASKS = "masks"
    #: ``describe`` without boxes: the model proposes the regions and describes each.
    DENSE_CAPTIONS = "dense captions"


@dataclass(frozen=True)
class ModelSettings:
    """How a model is run when the user says nothing."""

    #: Score a candidate needs to be reported when the user gives no threshold (locate).
    default_threshold: float = 0.0
    #: Whether the model gives sound results in bfloat16/float16 on a GPU.
    half_precision: bool = True
    #: Generation when the user says nothing (describe, and locate by generation): beams
    #: and the longest answer, as each model card runs it.
    num_beams: int = 1
    max_new_tokens: int = 64


@dataclass(frozen=True)
class Model:
    """A ready-made model users can ask for by short name.

    ``settings`` left out means the family's.
    """

    name: str
    checkpoint: str
    description: str
    settings: ModelSettings | None = None


@dataclass(frozen=True)
class BackendFamily:
    """One backend class: the tasks it serves, the ``model_type`` values it reads, what it
    can do, and the settings its models run with unless a model sets its own."""

    name: str
    cls: type[Backend]
    tasks: frozenset[Task]
    model_types: tuple[str, ...]
    capabilities: frozenset[Capability]
    settings: ModelSettings

    def capability_names(self) -> list[str]:
        """The capabilities as users read them, in declaration order of :class:`Capability`."""
        return [c.value for c in Capability if c in self.capabilities]

    def task_names(self) -> list[str]:
        return [t.value for t in Task if t in self.tasks]


@dataclass(frozen=True)
class ModelInfo:
    """A registered short name: its checkpoint, its family and the settings it runs with."""

    name: str
    checkpoint: str
    family: BackendFamily
    description: str
    settings: ModelSettings


@dataclass(frozen=True)
class ResolvedModel:
    """What :func:`resolve` found: the family to build, the checkpoint and its settings."""

    family: BackendFamily
    checkpoint: str
    settings: ModelSettings


#: Kinds of device a default model is chosen for: the CPU, or any accelerator.
DEVICE_KINDS = ("cpu", "gpu")
#: The model each task uses when the user names none, on each kind of device (the README
#: says why these: published referring-expression accuracy against the measured cost).
DEFAULT_MODELS: dict[Task, dict[str, str]] = {
    Task.LOCATE: {"cpu": "grounding-dino-base", "gpu": "qwen3-vl-4b"},
    Task.DESCRIBE: {"cpu": "florence-2-base", "gpu": "florence-2-large"},
}

_FAMILIES: dict[str, BackendFamily] = {}
_MODELS: dict[str, ModelInfo] = {}
#: ``(task, model_type)`` -> the family name that reads such checkpoints for that task.
_DISPATCH: dict[tuple[Task, str], str] = {}

B = TypeVar("B", bound="type[Backend]")


def register_backend(
    name: str,
    *,
    tasks: Iterable[Task],
    model_types: tuple[str, ...],
    settings: ModelSettings,
    capabilities: Iterable[Capability] = (),
    models: Iterable[Model] = (),
) -> Callable[[B], B]:
    """Class decorator adding a backend family, and its short model names, to the registry.

    A family serving several tasks is one entry. Two families claiming the same
    ``(task, model_type)``, or the same short name, is a programming error.
    """

    def decorator(cls: B) -> B:
        family = BackendFamily(
            name, cls, frozenset(tasks), model_types, frozenset(capabilities), settings
        )
        keys = [(task, model_type) for task in family.tasks for model_type in model_types]
        taken = [key for key in keys if key in _DISPATCH] + [
            m.name for m in models if m.name in _MODELS
        ]
        if name in _FAMILIES or taken:
            raise ValueError(f"backend {name!r} registers what is already registered: {taken}")
        _FAMILIES[name] = family
        _DISPATCH.update(dict.fromkeys(keys, name))
        for model in models:
            _MODELS[model.name] = ModelInfo(
                model.name, model.checkpoint, family, model.description, model.settings or settings
            )
        cls.family = family
        return cls

    return decorator


def _ensure_loaded() -> None:
    """Import every backend module once; each registers itself on import."""
    from sceneloc.backends import BACKEND_MODULES

    for module in BACKEND_MODULES:
        importlib.import_module(f"sceneloc.backends.{module}")


def list_backends() -> list[BackendFamily]:
    _ensure_loaded()
    return list(_FAMILIES.values())


def list_models(task: Task | str | None = None) -> list[ModelInfo]:
    """The short names, all of them or those serving ``task``."""
    _ensure_loaded()
    wanted = None if task is None else as_task(task)
    return [m for m in _MODELS.values() if wanted is None or wanted in m.family.tasks]


def get_backend(name: str) -> BackendFamily:
    _ensure_loaded()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise UnsupportedModelError(
            f"unknown backend {name!r}; known: {', '.join(sorted(_FAMILIES))}"
        ) from None


def default_model(task: Task | str = Task.LOCATE, device: str | Any = "cpu") -> str:
    """The short name of the model ``task`` uses on ``device`` (a ``torch.device`` or its
    name) when the user names none."""
    kind = "cpu" if str(device).split(":")[0] == "cpu" else "gpu"
    return DEFAULT_MODELS[as_task(task)][kind]


def as_task(task: Task | str) -> Task:
    try:
        return Task(task)
    except ValueError:
        raise SceneLocError(
            f"unknown task {task!r} (known: {', '.join(t.value for t in Task)})"
        ) from None


def read_config(checkpoint: str) -> dict:
    """``config.json`` of a local directory or hub repository, as a plain dict."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(checkpoint)
    except (OSError, ValueError) as exc:
        logger.debug("config lookup failed for %s: %s", checkpoint, exc)
        if "gated" in str(exc).lower():  # transformers' words for a gated repository
            raise ModelNotFoundError(
                f"cannot get model {checkpoint!r}: it is gated on the Hugging Face hub; accept "
                "its licence on its hub page, then `hf auth login` (or set HF_TOKEN), or pass "
                "a local directory"
            ) from None
        raise ModelNotFoundError(
            f"cannot get model {checkpoint!r} from the Hugging Face hub: check the id, or, "
            "offline, download it once where there is network (then HF_HUB_OFFLINE=1 uses the "
            "cache) or pass a local directory"
        ) from None
    return config


def resolve(name_or_path: str, task: Task | str = Task.LOCATE) -> ResolvedModel:
    """Map a short name, hub id or local directory, and a task, to what to load.

    Raises :class:`TaskNotSupportedError` when the model exists but does not serve ``task``.
    """
    _ensure_loaded()
    task = as_task(task)
    model = _MODELS.get(name_or_path)
    if model is not None:
        _check_serves(model.family, task, f"{name_or_path!r}")
        return ResolvedModel(model.family, model.checkpoint, model.settings)
    _reject_unlikely_names(name_or_path)
    model_type = read_config(name_or_path).get("model_type")
    owner = _DISPATCH.get((task, model_type))
    if owner is not None:
        family = _FAMILIES[owner]
        return ResolvedModel(family, name_or_path, family.settings)
    for family in _FAMILIES.values():
        if model_type in family.model_types:
            _check_serves(family, task, f"{name_or_path!r} (a {model_type} checkpoint)")
    raise UnsupportedModelError(
        f"{name_or_path!r} is a {model_type or 'model without model_type'!s} checkpoint, which no "
        f"sceneloc backend handles (supported: {', '.join(_supported_types())})"
    )


def _check_serves(family: BackendFamily, task: Task, what: str) -> None:
    if task in family.tasks:
        return
    able = [m.name for m in _MODELS.values() if task in m.family.tasks]
    raise TaskNotSupportedError(
        f"{what} is a {family.name} model, which does {', '.join(family.task_names())} but not "
        f"{task.value}; models that {task.value}: {', '.join(able) or 'none'}"
    )


def _reject_unlikely_names(name: str) -> None:
    """Fail fast, without asking the hub, for a missing local path or an unknown short name."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{name} has no config.json: it is not a model directory")
        return
    looks_local = name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
    if looks_local:
        raise ModelNotFoundError(f"model directory not found: {name}")
    if "/" not in name:
        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ModelNotFoundError(
            f"unknown model {name!r}: {hint}use a short name from `sceneloc models`, a hub id "
            "such as IDEA-Research/grounding-dino-tiny, or a local directory"
        )


def _supported_types() -> list[str]:
    return sorted({t for b in _FAMILIES.values() for t in b.model_types})
