"""What ``sceneloc finetune`` takes: the loop's options plus the model and how it learns.

Values come in four layers: the dataclass defaults, then the defaults of the model's
family (its :class:`~sceneloc.training.finetune.recipe.Recipe`: a learning rate that suits
it, which tower stays frozen, LoRA or not), then a YAML config, then the flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sceneloc.training.options import TrainingError, TrainingOptions
from sceneloc.training.task import TrainingTask

#: ``freeze`` values: which pretrained tower keeps its weights.
FREEZE = ("vision", "text", "none")
#: What a fine-tuned model is taught: to find regions, or to describe them.
FINETUNE_TASKS = ("locate", "describe")


@dataclass
class FinetuneOptions(TrainingOptions):
    """Everything ``sceneloc finetune`` takes; a YAML config file holds the same keys."""

    #: What to start from: a short name, a hub id or a local directory (a run's ``best/``).
    model: str = ""
    task: str = "locate"
    epochs: int = 5
    batch_size: int = 4
    lr: float = 1e-4
    #: Learning rate of the pretrained vision and text towers (``None``: ``lr`` / 10).
    backbone_lr: float | None = None
    weight_decay: float = 1e-4
    freeze: str = "none"
    #: LoRA rank (``0``: every trainable weight learns); merged into the saved weights.
    lora_rank: int = 0
    #: LoRA's scale numerator (``None``: the rank, a scale of 1).
    lora_alpha: float | None = None
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = False
    #: Extra queries whose referent is absent (no target box), per query: "not there".
    absent_fraction: float = 0.0
    #: Horizontal flips of images whose query says nothing of left and right.
    augment: bool = True
    val_limit: int | None = 500

    @classmethod
    def build(cls, preset: str | None = None, **explicit: Any) -> FinetuneOptions:
        """Defaults, the model family's defaults, then what the user gave."""
        from sceneloc.training.finetune.recipe import recipe_class

        if preset is not None:
            raise TrainingError(
                "sceneloc finetune takes no preset; its model's family sets defaults"
            )
        if not explicit.get("model"):
            raise TrainingError("fine-tuning needs 'model' (--model): a short name, hub id or dir")
        given = {k: v for k, v in explicit.items() if v is not None}
        recipe = recipe_class(str(given["model"]), str(given.get("task", "locate")))
        return super().build(None, **{**recipe.defaults, **given})

    def check(self) -> None:
        super().check()
        if self.freeze not in FREEZE:
            raise TrainingError(f"freeze must be one of {', '.join(FREEZE)}, not {self.freeze!r}")
        if self.task not in FINETUNE_TASKS:
            raise TrainingError(
                f"task must be one of {', '.join(FINETUNE_TASKS)}, not {self.task!r}"
            )
        if self.lora_rank < 0:
            raise TrainingError("lora_rank must be 0 (off) or more")
        if not 0.0 <= self.absent_fraction <= 1.0:
            raise TrainingError("absent_fraction must be between 0 and 1")
        for name in ("lr", "backbone_lr"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise TrainingError(f"{name} must not be negative")

    @property
    def tower_lr(self) -> float:
        """The learning rate of the pretrained towers."""
        return self.lr / 10 if self.backbone_lr is None else self.backbone_lr

    def make_task(self) -> TrainingTask:
        from sceneloc.training.finetune.task import FinetuneTask

        return FinetuneTask(self)
