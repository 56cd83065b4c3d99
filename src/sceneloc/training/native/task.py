"""Training the native model: its options and presets, and the task the loop runs.

The model is built from the options (pretrained encoders are downloaded or read here),
started from a trained model (``init_from``: a fine-tune, heads it lacks start fresh) or
loaded from a run's ``last/`` to resume. Its data is the samples file, and, when a
``scenes.jsonl`` lies beside it, every object of every image (attribute targets) with the
strategies that suit the scenes (:mod:`~sceneloc.training.native.queries`). Validation runs
the model through the backend that serves it, scoring by the code of ``sceneloc evaluate``,
then calibrates its presence score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sceneloc.api import Grounder
from sceneloc.backends.native import NativeBackend
from sceneloc.data.format import read_samples
from sceneloc.data.scenes import Scenes, scenes_beside
from sceneloc.evaluation import evaluate_model
from sceneloc.native.config import BUILTIN_CNN, BUILTIN_TEXT, FUSIONS, WORD_VECTORS, NativeConfig
from sceneloc.native.model import NativeGroundingModel
from sceneloc.native.processing import normalize
from sceneloc.native.text import read_word_vectors, vocabulary_from_texts, word_tokenizer, words
from sceneloc.training.native.calibration import calibrate_presence
from sceneloc.training.native.dataset import Collator, GroundingDataset, ImageGroup, group_by_image
from sceneloc.training.native.queries import absent_sampler_for, labeller_for
from sceneloc.training.options import TrainingError, TrainingOptions
from sceneloc.training.task import TrainingTask

logger = logging.getLogger(__name__)

#: Words a query may have (longer ones are cut).
MAX_TEXT_LENGTH = 32
#: Validation queries (and as many absent ones) that calibrate the presence score.
CALIBRATION_QUERIES = 500

#: Ready configurations; explicit options override them.
PRESETS: dict[str, dict[str, Any]] = {
    # Built-in CNN and text encoder, sized to learn in minutes on two CPU cores.
    "synthetic-cpu": {
        "image_encoder": BUILTIN_CNN, "text_encoder": BUILTIN_TEXT, "fusion": "cross-attention",
        "image_size": 256, "hidden_size": 64, "fusion_layers": 2, "image_layers": 2,
        "attention_heads": 2, "dropout": 0.0, "batch_size": 4, "lr": 2e-3,
        "warmup_fraction": 0.03, "lr_schedule": "stable-decay", "reasoning_lr_scale": 4.0,
        "absent_fraction": 0.1, "cache_images": True,
    },
    # The seeds' architecture for real photos: ResNet-50 and BERT, cross-attention fusion.
    "resnet50-bert": {
        "image_encoder": "microsoft/resnet-50", "text_encoder": "bert-base-uncased",
        "fusion": "cross-attention", "image_size": 512, "hidden_size": 256, "fusion_layers": 6,
        "attention_heads": 8, "batch_size": 16, "lr": 1e-4, "encoder_lr_scale": 0.1,
        "absent_fraction": 0.1,
    },
    # The seeds' baseline: pooled image and GloVe text vectors concatenated into an MLP.
    "concat-glove": {
        "image_encoder": "microsoft/resnet-50", "text_encoder": WORD_VECTORS, "fusion": "concat",
        "image_size": 384, "hidden_size": 256, "batch_size": 32, "lr": 3e-4,
        "encoder_lr_scale": 0.1, "absent_fraction": 0.1,
    },
}  # fmt: skip

#: The options that are the model's configuration.
MODEL_OPTIONS = ("image_encoder", "text_encoder", "fusion", "image_size", "hidden_size",
                 "fusion_layers", "image_layers", "attention_heads", "text_layers", "dropout",
                 "freeze_image_encoder", "freeze_text_encoder", "referent_head")  # fmt: skip


@dataclass
class NativeOptions(TrainingOptions):
    """Everything ``sceneloc train`` takes; a YAML config file holds the same keys."""

    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    # model
    image_encoder: str = BUILTIN_CNN
    text_encoder: str = BUILTIN_TEXT
    fusion: str = "cross-attention"
    image_size: int = 256
    hidden_size: int = 128
    fusion_layers: int = 4
    image_layers: int = 2
    attention_heads: int = 4
    dropout: float = 0.1
    text_layers: int = 2
    word_vectors: str | None = None
    freeze_image_encoder: bool = False
    freeze_text_encoder: bool = False
    referent_head: bool = True
    # a trained model directory to start from (its weights; the options' sizes are ignored)
    init_from: str | None = None
    # learning rates of parts of the model, as multiples of ``lr``
    encoder_lr_scale: float = 1.0
    reasoning_lr_scale: float = 1.0
    # data
    absent_fraction: float = 0.0
    learn_attributes: bool = True
    augment: bool = True
    cache_images: bool = False

    def check(self) -> None:
        if self.fusion not in FUSIONS:
            raise TrainingError(f"fusion must be one of {', '.join(FUSIONS)}, not {self.fusion!r}")
        super().check()
        self.check_model_sizes("image_size", "hidden_size", "fusion_layers")

    def make_task(self) -> NativeTask:
        return NativeTask(self)


def build_model(
    options: NativeOptions,
    texts: list[str],
    object_attributes: dict[str, list[str]] | None = None,
) -> tuple[NativeGroundingModel, PreTrainedTokenizerBase]:
    """A fresh model and its tokenizer; pretrained encoders are downloaded (or read) here."""
    config_values: dict[str, Any] = {name: getattr(options, name) for name in MODEL_OPTIONS}
    config_values["object_attributes"] = object_attributes
    vectors = None
    if options.text_encoder == BUILTIN_TEXT:
        tokenizer = word_tokenizer(vocabulary_from_texts(texts), max_length=MAX_TEXT_LENGTH)
    elif options.text_encoder == WORD_VECTORS:
        if not options.word_vectors:
            raise TrainingError("the word-vectors text encoder needs --word-vectors FILE")
        needed = {word for text in texts for word in words(text)}
        vocabulary, vectors = read_word_vectors(options.word_vectors, keep=needed)
        tokenizer = word_tokenizer(vocabulary, max_length=MAX_TEXT_LENGTH)
        config_values["word_vector_size"] = vectors.shape[1]
    else:
        from sceneloc.backends.base import from_pretrained

        tokenizer = from_pretrained(AutoTokenizer.from_pretrained, options.text_encoder)
    config_values["vocab_size"] = len(tokenizer)
    config_values["max_text_length"] = MAX_TEXT_LENGTH
    config = NativeConfig(**config_values)
    try:
        model = NativeGroundingModel(config, load_pretrained_encoders=True)
    except OSError as exc:
        raise TrainingError(f"cannot load a pretrained encoder: {exc}") from None
    if vectors is not None:
        with torch.no_grad():
            model.text_encoder.embed.weight[2 : 2 + len(vectors)] = torch.from_numpy(vectors)
    return model, tokenizer


def model_from(
    options: NativeOptions, checkpoint: str | Path, texts: list[str]
) -> tuple[NativeGroundingModel, PreTrainedTokenizerBase]:
    """A trained model to fine-tune: its weights, with the built-in vocabulary grown by the
    words of ``texts`` it lacks (their embeddings start fresh) and a referent head when the
    options want one and it has none (started fresh too)."""
    directory = Path(checkpoint)
    if not (directory / "model.safetensors").is_file():
        raise TrainingError(f"cannot start from {directory}: it holds no model.safetensors")
    try:
        config = NativeConfig.from_pretrained(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        state = load_file(directory / "model.safetensors")
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot start from {directory}: {exc}") from None
    if config.text_encoder == BUILTIN_TEXT:
        vocabulary = tokenizer.get_vocab()
        known = sorted(vocabulary, key=vocabulary.__getitem__)[2:]  # past [PAD] and [UNK]
        new = [word for word in vocabulary_from_texts(texts) if word not in vocabulary]
        tokenizer = word_tokenizer(known + new, max_length=config.max_text_length)
        config.vocab_size = len(tokenizer)
        if new:
            logger.info("new words: %s", ", ".join(new))
    config.referent_head = config.referent_head or (
        options.referent_head and config.fusion == "cross-attention"
    )
    model = NativeGroundingModel(config)
    fresh = model.state_dict()
    embed = "text_encoder.embed.weight"
    if embed in state and state[embed].shape != fresh[embed].shape:
        grown = fresh[embed].clone()
        grown[: len(state[embed])] = state[embed]
        state[embed] = grown
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not name.startswith("referent_head.") for name in missing):
        raise TrainingError(
            f"{directory} does not fit its own config (missing {missing}, unexpected {unexpected})"
        )
    return model, tokenizer


class NativeTask(TrainingTask):
    """The native grounding model on a samples file (and its scenes, when it has them)."""

    metrics = ("val_acc", "val_miou")
    options: NativeOptions
    # Set by prepare() and build_model(), which the loop calls first.
    groups: list[ImageGroup]
    texts: list[str]
    scenes: Scenes | None
    config: NativeConfig
    tokenizer: PreTrainedTokenizerBase

    def prepare(self) -> None:
        data = Path(self.options.data)
        samples = list(read_samples(data))
        if not samples:
            raise TrainingError(f"{data} holds no samples")
        self.texts = [sample.query for sample in samples]
        self.groups = group_by_image(samples, data.parent)
        missing = [group.path for group in self.groups if not group.path.is_file()]
        if missing:
            raise TrainingError(f"{len(missing)} training image(s) not found, e.g. {missing[0]}")
        if self.options.cache_images and self.options.num_workers > 0:
            logger.warning(
                "cache_images is ignored with data-loading workers (each has its own copy)"
            )
        self.scenes = scenes_beside(data)

    def build_model(self, resume_from: Path | None) -> NativeGroundingModel:
        if resume_from is not None:
            model = NativeGroundingModel.from_pretrained(resume_from)
            self.tokenizer = AutoTokenizer.from_pretrained(resume_from)
        elif self.options.init_from:
            model, self.tokenizer = model_from(self.options, self.options.init_from, self.texts)
        else:
            learn = self.scenes is not None and self.options.learn_attributes
            attributes = self.scenes.attributes() if learn else None
            model, self.tokenizer = build_model(self.options, self.texts, attributes)
        self.config = model.config
        return model

    def dataset(self) -> GroundingDataset:
        options, config = self.options, self.config
        absent = absent_sampler_for(self.groups, self.scenes) if options.absent_fraction else None
        return GroundingDataset(
            self.groups, config.image_size, seed=options.seed, augment=options.augment,
            absent=absent, absent_fraction=options.absent_fraction,
            cache_images=options.cache_images and options.num_workers == 0,
            scenes=self.scenes, attributes=config.object_attributes,
            labeller=labeller_for(self.scenes),
        )  # fmt: skip

    def collator(self) -> Collator:
        return Collator(self.tokenizer, self.config)

    def parameter_groups(
        self, model: torch.nn.Module
    ) -> list[tuple[list[torch.nn.Parameter], float]]:
        """Pretrained encoders learn at ``encoder_lr_scale`` times the rate, the spatial
        reasoning (a few small heads that the grounding loss reaches late) at
        ``reasoning_lr_scale`` times."""
        options = self.options
        groups: dict[str, tuple[list[torch.nn.Parameter], float]] = {
            "rest": ([], 1.0), "pretrained": ([], options.encoder_lr_scale),
            "reasoning": ([], options.reasoning_lr_scale),
        }  # fmt: skip
        pretrained_image = self.config.image_encoder != BUILTIN_CNN
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            if name.startswith("reasoning."):
                groups["reasoning"][0].append(parameter)
            elif (name.startswith("image_encoder.body.") and pretrained_image) or name.startswith(
                "text_encoder.model."
            ):
                groups["pretrained"][0].append(parameter)
            else:
                groups["rest"][0].append(parameter)
        return list(groups.values())

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pixels = normalize(batch.pop("pixel_values"), self.config)
        return model(pixel_values=pixels, **batch).loss

    def queries_in(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["input_ids"])

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """Acc@0.5 and mIoU on the validation file through the serving backend, by the same
        code as ``sceneloc evaluate``; then the presence score is calibrated on it (into
        ``model.config``)."""
        options = self.options
        backend = NativeBackend(model, self.tokenizer)
        metrics = evaluate_model(
            options.val, Grounder(backend, "validation"), threshold=0.0, limit=options.val_limit
        ).to_dict()
        limit = min(options.val_limit or CALIBRATION_QUERIES, CALIBRATION_QUERIES)
        calibrate_presence(backend, options.val, limit=limit, seed=options.seed)
        return {"val_acc": metrics["acc@0.5"], "val_miou": metrics["miou"]}

    def save(self, model: torch.nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
