"""The fine-tuning task the loop runs, and :func:`finetune`, its Python entry point.

The model starts from the user's checkpoint; the towers named by ``freeze`` keep their
weights, the others learn at ``backbone_lr``, the rest (fusion, decoder, heads) at ``lr``;
with ``lora_rank`` the base weights stay and peft's adapters learn instead. The validation
file is evaluated by the code of ``sceneloc evaluate`` before the first step and after
each epoch; ``report.json`` and ``report.md`` compare before and after.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sceneloc.training.finetune.data import FinetuneDataset, TrainingSamples, read_training_samples
from sceneloc.training.finetune.options import FinetuneOptions
from sceneloc.training.finetune.recipe import Recipe, RecipeCollator, recipe_class
from sceneloc.training.finetune.report import EVALUATIONS_FILE, write_report
from sceneloc.training.loop import ProgressCallback, train
from sceneloc.training.options import TrainingError
from sceneloc.training.state import EpochRecord, read_state
from sceneloc.training.task import EpochDataset, TrainingTask

logger = logging.getLogger(__name__)

#: Where a LoRA run keeps its adapter, inside each saved checkpoint.
ADAPTER_DIR = "adapter"
#: Options that shape the saved state: a resumed run must be given the same.
RESUME_KEYS = ("model", "task", "freeze", "lora_rank", "lora_alpha")


class FinetuneTask(TrainingTask):
    """A pretrained model of any family that has a recipe, on a samples file."""

    metrics = ("val_acc", "val_miou")
    validate_before_training = True
    options: FinetuneOptions
    data: TrainingSamples  # set by prepare()

    def __init__(self, options: FinetuneOptions) -> None:
        super().__init__(options)
        self.recipe: Recipe = recipe_class(options.model, options.task)(options)
        self.metrics = tuple(self.recipe.metric_keys())
        self.unused_parameters = self.recipe.unused_parameters
        #: The epoch the next validation scores (0: before training).
        self._epoch: int | None = None

    def prepare(self) -> None:
        """Check the training and validation samples (every image opened, every box inside
        it) before anything is written."""
        self.data = read_training_samples(self.options.data)
        if self.options.val:
            read_training_samples(self.options.val)

    def check_resume(self, saved: dict[str, Any]) -> None:
        """The saved state holds the weights of one model, adapted one way: a resume must
        ask for the same."""
        for key in RESUME_KEYS:
            if key in saved and saved[key] != getattr(self.options, key):
                raise TrainingError(
                    f"{self.options.out} was fine-tuned with {key} {saved[key]!r}, not "
                    f"{getattr(self.options, key)!r}: resume with the same {key}"
                )

    def build_model(self, resume_from: Path | None) -> nn.Module:
        """The user's checkpoint, frozen and adapted as asked. A resumed run is built the
        same way: the loop then restores its weights and optimizer from ``state/``."""
        options, recipe = self.options, self.recipe
        model = recipe.load(options.model)
        if options.lora_rank:
            model = self._with_lora(model)
        if options.gradient_checkpointing:
            # After LoRA: peft would otherwise hook every part's input embeddings so that
            # reentrant checkpointing sees a gradient, and a vision backbone's are a tuple.
            recipe.enable_gradient_checkpointing(base_model(model))
        if options.freeze != "none":
            # After LoRA: a frozen tower's adapters stay frozen too.
            prefixes = recipe.towers()[options.freeze]
            for name, parameter in base_model(model).named_parameters():
                if name.startswith(prefixes):
                    parameter.requires_grad_(False)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        logger.info("%d of %d parameters train", trainable, total)
        if not trainable:
            raise TrainingError(f"nothing left to train in {options.model}: unfreeze a tower")
        self._model = model
        return model

    def _with_lora(self, model: nn.Module) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        options, recipe = self.options, self.recipe
        recipe.prepare_for_lora(model)
        config = LoraConfig(
            r=options.lora_rank, lora_alpha=options.lora_alpha or options.lora_rank,
            lora_dropout=options.lora_dropout, target_modules=list(recipe.lora_targets),
            modules_to_save=list(recipe.lora_modules_to_save) or None,
        )  # fmt: skip
        return get_peft_model(model, config)

    def dataset(self) -> EpochDataset:
        options = self.options
        items = FinetuneDataset(
            self.data, Path(options.data).parent, seed=options.seed, augment=options.augment,
            absent_fraction=options.absent_fraction,
        )  # fmt: skip
        return self.recipe.training_items(base_model(self._model), items)

    def collator(self) -> FinetuneCollator:
        return FinetuneCollator(self.recipe)

    def parameter_groups(self, model: nn.Module) -> list[tuple[list[nn.Parameter], float]]:
        """The towers learn at ``backbone_lr``, the rest at ``lr``; LoRA adapters, new
        weights wherever they sit, at ``lr``."""
        prefixes = sum(self.recipe.towers().values(), ())
        towers: list[nn.Parameter] = []
        rest: list[nn.Parameter] = []
        for name, parameter in base_model(model).named_parameters():
            if parameter.requires_grad:
                in_tower = name.startswith(prefixes) and ".lora_" not in name
                (towers if in_tower else rest).append(parameter)
        scale = self.options.tower_lr / self.options.lr if self.options.lr else 0.0
        return [(rest, 1.0), (towers, scale)]

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return self.recipe.loss(model, batch["inputs"])

    def queries_in(self, batch: dict[str, Any]) -> int:
        return int(batch["items"])

    def validate(self, model: nn.Module) -> dict[str, float]:
        """The task's metrics on the validation file; the whole evaluation is kept for the
        report."""
        evaluation = self.recipe.evaluate(
            base_model(model), self.options.val, self.options.val_limit
        )
        out = Path(self.options.out)
        if self._epoch is None:  # this process's first validation: before training, or
            # after the first epoch a resumed run trains (the state counts epochs from 0)
            self._epoch = read_state(out).epoch + 2 if self.options.resume else 0
        # A fresh run's first validation starts the file (a failed earlier try may have left one).
        mode = "a" if self.options.resume or self._epoch else "w"
        with (out / EVALUATIONS_FILE).open(mode, encoding="utf-8") as handle:
            handle.write(json.dumps({"epoch": self._epoch, **evaluation}) + "\n")
        self._epoch += 1
        return {name: evaluation[key] for name, key in self.recipe.metric_keys().items()}

    def save(self, model: nn.Module, directory: Path) -> None:
        """An ordinary checkpoint; a LoRA run's adapters are merged into it and also kept
        in ``adapter/``."""
        if hasattr(model, "merge_and_unload"):  # a peft model
            self.recipe.save(copy.deepcopy(model).merge_and_unload(), directory)
            model.save_pretrained(directory / ADAPTER_DIR)
        else:
            self.recipe.save(model, directory)

    def finish(self, records: list[EpochRecord]) -> None:
        write_report(self.options, self.recipe.family, list(self.recipe.metric_keys().values()))


class FinetuneCollator:
    """A batch: the recipe's inputs and the number of items (picklable for workers)."""

    def __init__(self, recipe: Recipe) -> None:
        self.collate = RecipeCollator(recipe)

    def __call__(self, items: list) -> dict[str, Any]:
        return {"items": len(items), "inputs": self.collate(items)}


def base_model(model: nn.Module) -> nn.Module:
    """The model itself, with its LoRA layers, out of a peft wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning run gives back: the checkpoints, the report and the figures
    before and after (``None`` without validation data)."""

    best: Path
    last: Path
    report: Path
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    records: list[EpochRecord]


def finetune(
    model: str,
    data: str | Path,
    out: str | Path,
    *,
    val: str | Path | None = None,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> FinetuneResult:
    """Fine-tune ``model`` (short name, hub id or directory) on the samples of ``data``;
    ``options`` are :class:`FinetuneOptions` fields (``epochs=3``, ``lora_rank=8``, ...).

    >>> result = sceneloc.finetune("grounding-dino-tiny", "mine/train.jsonl", "runs/gd",
    ...                            val="mine/val.jsonl", epochs=3)
    >>> result.before["acc@0.5"], result.after["acc@0.5"], result.best
    """
    built = FinetuneOptions.build(
        model=model, data=str(data), out=str(out), val=None if val is None else str(val), **options
    )
    records = train(built, progress)
    report = json.loads((Path(built.out) / "report.json").read_text())
    return FinetuneResult(
        Path(built.out) / "best", Path(built.out) / "last", Path(built.out) / "report.json",
        report["before"], report["after"], records,
    )  # fmt: skip
