"""Which backend serves which model: short names, hub ids, local directories.

Backends register themselves with :func:`register_backend`; :func:`resolve` turns what a
user typed into a backend class and a checkpoint to load, the way transformers' Auto
classes read ``model_type`` from ``config.json``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
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
            f"cannot find model {checkpoint!r}: give a short name (see `sceneloc models`), a "
            "Hugging Face hub id, or a local directory with config.json. Offline? Download it "
            "once with network access (hub cache) or pass a local path; HF_HUB_OFFLINE=1 "
            "uses only the cache."
        ) from None
    return config


def resolve(name_or_path: str) -> tuple[BackendInfo, str]:
    """Map a short name, hub id or local directory to ``(backend, checkpoint)``."""
    _ensure_loaded()
    model = _MODELS.get(name_or_path)
    if model is not None:
        return _BACKENDS[model.backend], model.checkpoint
    model_type = read_config(name_or_path).get("model_type")
    for backend in _BACKENDS.values():
        if model_type in backend.model_types:
            return backend, name_or_path
    raise UnsupportedModelError(
        f"{name_or_path!r} is a {model_type or 'model without model_type'!s} checkpoint, which no "
        f"sceneloc backend handles (supported: {', '.join(_supported_types())})"
    )


def _supported_types() -> list[str]:
    return sorted({t for b in _BACKENDS.values() for t in b.model_types})
