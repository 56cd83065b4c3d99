"""Training the native describer: its options and presets, and the task the loop runs.

The model is built from the options, its word-level vocabulary from the training
captions, or loaded from a run's ``last/`` to resume. The data is the samples file, whose
lines with the same image and box are one region's references, and, when a
``scenes.jsonl`` lies beside it, every object of every image (regions and attribute targets,
:mod:`~sceneloc.training.describe.dataset`). Validation describes the validation file's
regions through the backend that serves the model and scores them as ``sceneloc evaluate``
does; on synthetic scenes first by ``exact``, the share of captions that pick out exactly
their region (:mod:`sceneloc.data.synth.checking`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sceneloc.api import Describer
from sceneloc.backends.native_describer import NativeDescriberBackend
from sceneloc.data.format import read_samples
from sceneloc.data.scenes import Scenes, scenes_beside
from sceneloc.evaluation.describing import evaluate_describer
from sceneloc.native.config import BUILTIN_CNN
from sceneloc.native.describer import BOS_TOKEN, EOS_TOKEN, DescriberConfig, NativeDescriberModel
from sceneloc.native.processing import normalize
from sceneloc.native.text import vocabulary_from_texts, word_tokenizer
from sceneloc.training.describe.dataset import (
    RegionCollator,
    RegionDataset,
    RegionGroup,
    region_groups,
)
from sceneloc.training.options import TrainingError, TrainingOptions
from sceneloc.training.task import TrainingTask

logger = logging.getLogger(__name__)

#: Words a caption may have in training (longer ones are cut).
MAX_CAPTION_LENGTH = 24

#: Ready configurations; explicit options override them.
PRESETS: dict[str, dict[str, Any]] = {
    # Built-in CNN, sized to learn in minutes on two CPU cores.
    "synthetic-cpu": {
        "image_encoder": BUILTIN_CNN, "image_size": 256, "hidden_size": 64, "image_layers": 2,
        "region_layers": 2, "attention_heads": 2, "dropout": 0.0, "batch_size": 8, "lr": 2e-3,
        "regions_per_image": 16,
        "warmup_fraction": 0.03, "lr_schedule": "stable-decay", "cache_images": True,
        "epochs": 40, "val_limit": 600,
    },
    # Real photos: a pretrained ResNet-50 learning at a tenth of the rate.
    "resnet50": {
        "image_encoder": "microsoft/resnet-50", "image_size": 512, "hidden_size": 256,
        "image_layers": 2, "region_layers": 2, "attention_heads": 8, "batch_size": 16,
        "lr": 1e-4, "encoder_lr_scale": 0.1,
    },
}  # fmt: skip

#: The options that are the model's configuration.
MODEL_OPTIONS = ("image_encoder", "image_size", "hidden_size", "image_layers", "region_layers",
                 "attention_heads", "region_grid", "dropout")  # fmt: skip


@dataclass
class DescribeOptions(TrainingOptions):
    """Everything ``sceneloc train --task describe`` takes; a YAML config holds the same keys."""

    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    # model
    image_encoder: str = BUILTIN_CNN
    image_size: int = 256
    hidden_size: int = 128
    image_layers: int = 2
    region_layers: int = 2
    attention_heads: int = 4
    region_grid: int = 3
    dropout: float = 0.1
    #: A native grounder (short name or directory) whose image side the model starts from.
    image_encoder_from: str | None = None
    encoder_lr_scale: float = 1.0
    # data
    learn_attributes: bool = True
    every_object: bool = True
    regions_per_image: int | None = None
    augment: bool = True
    cache_images: bool = False
    # validation
    val_beams: int = 1

    def check(self) -> None:
        super().check()
        self.check_model_sizes("image_size", "hidden_size", "region_grid", "val_beams")

    def make_task(self) -> DescribeTask:
        return DescribeTask(self)


def build_model(
    options: DescribeOptions,
    captions: list[str],
    object_attributes: dict[str, list[str]] | None = None,
) -> tuple[NativeDescriberModel, PreTrainedTokenizerBase]:
    """A fresh model and its word-level tokenizer (``[BOS]``/``[EOS]`` after ``[PAD]``,
    ``[UNK]``); a pretrained image encoder is downloaded (or read) here."""
    vocabulary = [BOS_TOKEN, EOS_TOKEN, *vocabulary_from_texts(captions)]
    tokenizer = word_tokenizer(vocabulary, max_length=MAX_CAPTION_LENGTH)
    bos, eos = tokenizer.convert_tokens_to_ids([BOS_TOKEN, EOS_TOKEN])
    config = DescriberConfig(
        **{name: getattr(options, name) for name in MODEL_OPTIONS},
        vocab_size=len(tokenizer), bos_token_id=bos, eos_token_id=eos,
        max_caption_length=MAX_CAPTION_LENGTH, object_attributes=object_attributes,
    )  # fmt: skip
    try:
        model = NativeDescriberModel(config, load_pretrained_encoders=True)
    except OSError as exc:
        raise TrainingError(f"cannot load a pretrained encoder: {exc}") from None
    if options.image_encoder_from:
        start_from_grounder(model, options.image_encoder_from)
    return model, tokenizer


#: What a describer takes from a native grounder: its parameter names there -> here.
GROUNDER_PARTS = {
    "image_encoder.": "image_encoder.",
    "image_context.": "image_context.",
    "attribute_heads.": "attribute_heads.",
    "reasoning.objects.": "objects.",
}


def start_from_grounder(model: NativeDescriberModel, grounder: str) -> None:
    """Start ``model``'s image side (encoder, image context, attribute heads, object map)
    from a trained native grounder's (a short name such as ``native-synth`` or a directory):
    the describer then learns to speak about features that already tell colours, shapes
    and places apart. The two must have the same sizes and attributes."""
    from sceneloc.backends.base import from_pretrained
    from sceneloc.native.model import NativeGroundingModel
    from sceneloc.registry import Task, resolve

    source = from_pretrained(
        NativeGroundingModel.from_pretrained, resolve(grounder, Task.LOCATE).checkpoint
    )
    own = model.state_dict()
    taken = {}
    for name, tensor in source.state_dict().items():
        prefix = next((p for p in GROUNDER_PARTS if name.startswith(p)), None)
        if prefix is None:
            continue
        target = GROUNDER_PARTS[prefix] + name[len(prefix) :]
        if target not in own or own[target].shape != tensor.shape:
            raise TrainingError(
                f"{grounder} does not fit this describer ({name}: sizes or attributes differ)"
            )
        taken[target] = tensor
    model.load_state_dict(taken, strict=False)
    logger.info("started %d tensors of the image side from %s", len(taken), grounder)


def read_regions(data: str | Path, every_object: bool) -> tuple[list[RegionGroup], Scenes | None]:
    """The regions of a samples file (with the scenes beside it, if any) and its scenes
    (``None`` without a scene file)."""
    path = Path(data)
    samples = list(read_samples(path))
    if not samples:
        raise TrainingError(f"{path} holds no samples")
    scenes = scenes_beside(path)
    return region_groups(samples, path.parent, scenes, every_object), scenes


class DescribeTask(TrainingTask):
    """The native describer on a samples file (and its scenes, when it has them)."""

    metrics = ("val_exact", "val_cider", "val_bleu4")
    options: DescribeOptions
    # Set by prepare() and build_model(), which the loop calls first.
    regions: list[RegionGroup]
    scenes: Scenes | None
    config: DescriberConfig
    tokenizer: PreTrainedTokenizerBase

    def prepare(self) -> None:
        self.regions, self.scenes = read_regions(self.options.data, self.options.every_object)
        missing = [group.path for group in self.regions if not group.path.is_file()]
        if missing:
            raise TrainingError(f"{len(missing)} training image(s) not found, e.g. {missing[0]}")
        if self.options.val and scenes_beside(self.options.val) is None:
            # Without scenes there is no exact score: the best model is the one with the
            # best CIDEr-D.
            self.metrics = ("val_cider", "val_bleu4")

    def build_model(self, resume_from: Path | None) -> NativeDescriberModel:
        if resume_from is not None:
            model = NativeDescriberModel.from_pretrained(resume_from)
            self.tokenizer = AutoTokenizer.from_pretrained(resume_from)
        else:
            learn = self.scenes is not None and self.options.learn_attributes
            attributes = self.scenes.attributes() if learn else None
            captions = [ref for group in self.regions for refs in group.references for ref in refs]
            model, self.tokenizer = build_model(self.options, captions, attributes)
        self.config = model.config
        return model

    def dataset(self) -> RegionDataset:
        options, config = self.options, self.config
        return RegionDataset(
            self.regions, config.image_size, seed=options.seed, augment=options.augment,
            cache_images=options.cache_images and options.num_workers == 0,
            scenes=self.scenes, attributes=config.object_attributes,
            regions_per_image=options.regions_per_image,
        )  # fmt: skip

    def collator(self) -> RegionCollator:
        return RegionCollator(self.tokenizer, self.config)

    def parameter_groups(
        self, model: torch.nn.Module
    ) -> list[tuple[list[torch.nn.Parameter], float]]:
        """A pretrained image encoder learns at ``encoder_lr_scale`` times the rate."""
        pretrained = self.config.image_encoder != BUILTIN_CNN
        groups: dict[bool, list[torch.nn.Parameter]] = {True: [], False: []}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                groups[pretrained and name.startswith("image_encoder.body.")].append(parameter)
        return [(groups[False], 1.0), (groups[True], self.options.encoder_lr_scale)]

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pixels = normalize(batch.pop("pixel_values"), self.config)
        return model(pixel_values=pixels, **batch).loss

    def queries_in(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["boxes"])

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """``exact`` (synthetic scenes), CIDEr-D and BLEU-4 on the validation file's regions
        through the serving backend, by the code of ``sceneloc evaluate --task describe``."""
        options = self.options
        backend = NativeDescriberBackend(model, self.tokenizer)
        settings = replace(backend.family.settings, num_beams=options.val_beams)
        describer = Describer(backend, "validation", settings)
        metrics = evaluate_describer(
            options.val, describer, limit=options.val_limit, meteor=False
        ).to_dict()
        model.train()
        return {f"val_{name}": metrics.get(name) for name in ("exact", "cider", "bleu4")}

    def save(self, model: torch.nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
