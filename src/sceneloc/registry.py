"""Which backend serves which model: short names, hub ids, local directories.

Backends register themselves with :func:`register_backend`; :func:`resolve` turns what a
user typed into a backend class and a checkpoint to load, the way transformers' Auto
classes read ``model_type`` from ``config.json``.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sceneloc.errors import ModelNotFoundError, UnsupportedModelError

if TYPE_CHECKING:
    from sceneloc.backends.base import Backend

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """A ready-made model users can ask for by short name."""

    name: str
    checkpoint: str
    backend: str
    description: str


@dataclass(frozen=True)
class BackendInfo:
    """A backend family: its class, the ``model_type`` values it handles, what it can do."""

    name: str
    cls: type[Backend]
    model_types: tuple[str, ...]
    capabilities: tuple[str, ...]


_BACKENDS: dict[str, BackendInfo] = {}
_MODELS: dict[str, ModelInfo] = {}

B = TypeVar("B", bound="type[Backend]")


def register_backend(
    name: str,
    *,
    model_types: tuple[str, ...],
    capabilities: tuple[str, ...] = (),
    models: dict[str, tuple[str, str]] | None = None,
) -> Callable[[B], B]:
    """Class decorator adding a backend, and its short model names, to the registry.

    ``models`` maps a short name to ``(checkpoint, description)``.
    """

    def decorator(cls: B) -> B:
        _BACKENDS[name] = BackendInfo(name, cls, model_types, capabilities)
        for short, (checkpoint, description) in (models or {}).items():
            _MODELS[short] = ModelInfo(short, checkpoint, name, description)
        cls.backend_name = name
        return cls

    return decorator


def _ensure_loaded() -> None:
    """Import every backend module once; each registers itself on import."""
    from sceneloc.backends import BACKEND_MODULES

    for module in BACKEND_MODULES:
        importlib.import_module(f"sceneloc.backends.{module}")


def list_backends() -> list[BackendInfo]:
    _ensure_loaded()
    return list(_BACKENDS.values())


def list_models() -> list[ModelInfo]:
    _ensure_loaded()
    return list(_MODELS.values())


def get_backend(name: str) -> BackendInfo:
    _ensure_loaded()
    try:
        return _BACKENDS[name]
    except KeyError:
        raise UnsupportedModelError(
            f"unknown backend {name!r}; known: {', '.join(sorted(_BACKENDS))}"
        ) from None


def read_config(checkpoint: str) -> dict:
    """``config.json`` of a local directory or hub repository, as a plain dict."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(checkpoint)
    except (OSError, ValueError) as exc:
        logger.debug("config lookup failed for %s: %s", checkpoint, exc)
        raise ModelNotFoundError(
            f"cannot get model {checkpoint!r} from the Hugging Face hub: check the id, or, "
            "offline, download it once where there is network (then HF_HUB_OFFLINE=1 uses the "
            "cache) or pass a local directory"
        ) from None
    return config


def resolve(name_or_path: str) -> tuple[BackendInfo, str]:
    """Map a short name, hub id or local directory to ``(backend, checkpoint)``."""
    _ensure_loaded()
    model = _MODELS.get(name_or_path)
    if model is not None:
        return _BACKENDS[model.backend], model.checkpoint
    _reject_unlikely_names(name_or_path)
    model_type = read_config(name_or_path).get("model_type")
    for backend in _BACKENDS.values():
        if model_type in backend.model_types:
            return backend, name_or_path
    raise UnsupportedModelError(
        f"{name_or_path!r} is a {model_type or 'model without model_type'!s} checkpoint, which no "
        f"sceneloc backend handles (supported: {', '.join(_supported_types())})"
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
    return sorted({t for b in _BACKENDS.values() for t in b.model_types})
