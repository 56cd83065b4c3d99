"""How one backend family is fine-tuned: a :class:`Recipe`, looked up by family name.

The task (:mod:`~sceneloc.training.finetune.task`) does what every family shares: reading
and checking the samples, flips, "not there" queries, freezing, the towers' learning rate,
LoRA, gradient checkpointing, validation and the report. A recipe does what is the
family's own: loading model and processor, turning items into the model's inputs and
targets, the loss, the backend that serves the model in memory, and saving it.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from sceneloc.registry import resolve
from sceneloc.training.options import TrainingError

if TYPE_CHECKING:
    from sceneloc.backends.base import Backend
    from sceneloc.training.finetune.options import FinetuneOptions
    from sceneloc.training.task import EpochDataset

logger = logging.getLogger(__name__)

#: Family name (``sceneloc models``) -> its recipe ("module:Class"), imported on first use.
RECIPES: dict[str, str] = {
    "grounding-dino": "sceneloc.training.finetune.grounding_dino:GroundingDinoRecipe",
    "florence-2": "sceneloc.training.finetune.florence2:Florence2Recipe",
    "qwen3-vl": "sceneloc.training.finetune.qwen_vl:QwenVLRecipe",
    "clip-rerank": "sceneloc.training.finetune.clip_rerank:ClipRerankRecipe",
}
#: Families that cannot be fine-tuned here, and why (what the user reads).
NOT_FINETUNABLE: dict[str, str] = {
    "owlv2": "transformers has no training loss for OWLv2 (Owlv2ForObjectDetection takes no "
    "labels); fine-tune grounding-dino-tiny or florence-2-base instead",
    "native": "native models are trained with `sceneloc train`, which also continues a run",
}


@dataclass
class FinetuneItem:
    """One training example: an image, a query and the boxes it refers to.

    ``boxes`` are ``(n, 4)`` pixels of ``image``, empty when the referent is absent. For
    describe data the query is the region's description and ``boxes`` its one region.
    """

    image: Image.Image
    query: str
    boxes: np.ndarray


class Recipe(ABC):
    """One family's part of fine-tuning; the task calls :meth:`load` first."""

    #: The registry family it fine-tunes.
    family: ClassVar[str]
    #: What it can be taught (``FinetuneOptions.task``).
    tasks: ClassVar[tuple[str, ...]] = ("locate",)
    #: Options this family learns best with, under what the user gives.
    defaults: ClassVar[dict[str, Any]] = {}
    #: Names (suffixes) of the linear layers LoRA adapts.
    lora_targets: ClassVar[tuple[str, ...]] = ()
    #: Modules trained in full beside the LoRA adapters (new heads, for one).
    lora_modules_to_save: ClassVar[tuple[str, ...]] = ()
    #: Whether some parameters get no gradient in a step (see ``TrainingTask``).
    unused_parameters: ClassVar[bool] = False

    def __init__(self, options: FinetuneOptions) -> None:
        self.options = options

    @abstractmethod
    def load(self, checkpoint: str) -> nn.Module:
        """The model of ``checkpoint`` (on the CPU, fp32); keeps its processor."""

    @abstractmethod
    def towers(self) -> dict[str, tuple[str, ...]]:
        """Parameter-name prefixes of the pretrained ``vision`` and ``text`` towers (they
        learn at ``backbone_lr`` and ``freeze`` stops them)."""

    def training_items(self, model: nn.Module, dataset: EpochDataset) -> EpochDataset:
        """What the loop trains on, made from the samples' items once the model is built:
        the items themselves, or (a recipe that trains on a frozen model's features) the
        features computed once from them."""
        return dataset

    @abstractmethod
    def collate(self, items: list[Any]) -> dict[str, Any]:
        """The model's inputs and targets for a batch of :meth:`training_items`."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """The training loss of one batch (``model`` may be wrapped for its devices)."""

    @abstractmethod
    def backend(self, model: nn.Module) -> Backend:
        """The backend that serves ``model`` as it is in memory (validation uses it)."""

    def metric_keys(self) -> dict[str, str]:
        """``metrics.csv`` column -> key of :meth:`evaluate`'s result; the first picks
        ``best/``."""
        return {"val_acc": "acc@0.5", "val_miou": "miou"}

    def evaluate(self, model: nn.Module, data: str, limit: int | None) -> dict[str, Any]:
        """``model`` on the validation samples, scored as ``sceneloc evaluate --json`` does."""
        from sceneloc.api import Grounder
        from sceneloc.evaluation import evaluate_model

        grounder = Grounder(self.backend(model), "validation")
        return evaluate_model(data, grounder, threshold=0.0, limit=limit).to_dict()

    def save(self, model: nn.Module, directory: Path) -> None:
        """Write an ordinary checkpoint of ``model`` that ``sceneloc.load`` reads."""
        model.save_pretrained(directory)
        self.processor.save_pretrained(directory)

    def enable_gradient_checkpointing(self, model: nn.Module) -> None:
        """Recompute activations in the backward pass: in the whole model where transformers
        supports it, else in its parts that do (a detector's backbone and text encoder)."""
        if getattr(model, "supports_gradient_checkpointing", False):
            model.gradient_checkpointing_enable({"use_reentrant": False})
            return
        parts: list[str] = []
        for name, module in model.named_modules():
            inside = any(name.startswith(part + ".") for part in parts)
            if name and not inside and getattr(module, "supports_gradient_checkpointing", False):
                module.gradient_checkpointing_enable({"use_reentrant": False})
                parts.append(name)
        if not parts:
            raise TrainingError(
                f"{self.family} models do not support gradient checkpointing (transformers "
                "implements it for none of their parts); run without --gradient-checkpointing"
            )
        logger.info("gradient checkpointing in %s", ", ".join(parts))

    def prepare_for_lora(self, model: nn.Module) -> None:  # noqa: B027 (an optional hook)
        """Make ``model`` acceptable to peft (some models need a method peft asks for)."""


class RecipeCollator:
    """The recipe's :meth:`Recipe.collate` as a picklable callable (for loading workers)."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def __call__(self, items: list[Any]) -> dict[str, Any]:
        return self.recipe.collate(items)


def recipe_class(model: str, task: str = "locate") -> type[Recipe]:
    """The recipe of the family that serves ``model`` (a short name, hub id or directory);
    a model no recipe fine-tunes raises :class:`TrainingError` saying why."""
    family = resolve(model, task).family.name
    if family not in RECIPES:
        reason = NOT_FINETUNABLE.get(family, "no fine-tuning recipe is written for it yet")
        raise TrainingError(f"cannot fine-tune {model!r} ({family} models): {reason}")
    module, name = RECIPES[family].split(":")
    recipe = getattr(importlib.import_module(module), name)
    if task not in recipe.tasks:
        raise TrainingError(
            f"{family} models are fine-tuned to {', '.join(recipe.tasks)}, not to {task}"
        )
    return recipe
