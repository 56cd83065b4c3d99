"""Training the alignment model: options and presets, batches of regions and sentences.

A batch holds a few images, each with its regions and its sentences (the samples' queries).
The regions are every object of the image when a ``scenes.jsonl`` lies beside the samples
(synthetic scenes), else the boxes its samples annotate. The paper's bidirectional ranking
loss never says which region a word names: it asks each image to score its own sentences
above the batch's others, and each sentence to score its own image above the others. In
dense scenes most sentences are true of several images' regions ("the red circle"), so that
signal is faint; since the samples do say which box each sentence describes,
``region_weight`` adds the same ranking inside the image, the sentence's own region above
the image's others (the ``synthetic-cpu`` preset weighs it as the image-sentence term).

Validation grounds the validation samples through the serving backend (proposals of the
proposer, ranked by the alignment score), scored by the code of ``sceneloc evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sceneloc.api import Grounder
from sceneloc.backends.alignment import AlignmentBackend, proposer_path
from sceneloc.backends.base import from_pretrained
from sceneloc.backends.native import BUNDLED
from sceneloc.boxes import cxcywh_to_xyxy, iou_matrix
from sceneloc.evaluation import evaluate_model, summarize
from sceneloc.native.alignment import AlignmentConfig, AlignmentModel
from sceneloc.native.config import BUILTIN_CNN, BUILTIN_TEXT, WORD_VECTORS
from sceneloc.native.model import NativeGroundingModel
from sceneloc.native.processing import tokenize
from sceneloc.native.text import vocabulary_from_texts, word_tokenizer
from sceneloc.training.native.dataset import GroundingDataset
from sceneloc.training.native.task import MAX_TEXT_LENGTH, NativeTask
from sceneloc.training.options import TrainingError, TrainingOptions
from sceneloc.training.task import TrainingTask

#: IoU with a region that makes it a sample's own (the synthetic scenes' boxes are equal).
OWN_REGION_IOU = 0.9
#: Where a model trained with its own ``proposer`` keeps a copy of it.
PROPOSER_DIRECTORY = "proposer"

#: Ready configurations; explicit options override them.
PRESETS: dict[str, dict[str, Any]] = {
    # Built-in CNN and text encoder, sized to learn in minutes on two CPU cores.
    # The image encoder starts as the bundled grounder's (the proposer), whose sizes these are.
    "synthetic-cpu": {
        "image_encoder": BUILTIN_CNN, "text_encoder": BUILTIN_TEXT, "image_size": 256,
        "hidden_size": 64, "image_layers": 2, "text_layers": 1, "attention_heads": 2,
        "image_encoder_from_proposer": True, "freeze_image_encoder": True,
        "region_weight": 1.0,
        "dropout": 0.0, "batch_size": 8, "lr": 1e-3, "warmup_fraction": 0.03,
        "lr_schedule": "stable-decay", "cache_images": True,
    },
}  # fmt: skip

#: The options that are the model's configuration.
MODEL_OPTIONS = ("image_encoder", "text_encoder", "image_size", "hidden_size", "image_layers",
                 "text_layers", "attention_heads", "dropout", "region_samples",
                 "region_weight", "freeze_image_encoder")  # fmt: skip


@dataclass
class AlignOptions(TrainingOptions):
    """Everything ``sceneloc train --task align`` takes; a YAML config holds the same keys."""

    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    # model
    image_encoder: str = BUILTIN_CNN
    text_encoder: str = BUILTIN_TEXT
    image_size: int = 256
    hidden_size: int = 128
    image_layers: int = 1
    text_layers: int = 2
    attention_heads: int = 4
    dropout: float = 0.1
    region_samples: int = 4
    #: Weight of the within-image ranking of the sample's own box above the image's other
    #: regions (:func:`~sceneloc.native.alignment.region_ranking_loss`); 0: the paper's
    #: image-sentence ranking alone, which never looks at the samples' boxes.
    region_weight: float = 0.0
    freeze_image_encoder: bool = False
    #: The native grounder that proposes regions at inference (a directory); ``None``: the
    #: bundled ``native-synth``. A given one is saved inside the trained model.
    proposer: str | None = None
    #: Start the image encoder from the proposer's (as the paper's region CNN starts from
    #: a detector's), so that the ranking loss teaches words, not pixels, first.
    image_encoder_from_proposer: bool = False
    # data
    augment: bool = True
    cache_images: bool = False

    def check(self) -> None:
        super().check()
        if self.text_encoder == WORD_VECTORS:
            raise TrainingError("the alignment model reads text with builtin or a pretrained one")
        self.check_model_sizes("image_size", "hidden_size", "region_samples")

    def make_task(self) -> AlignTask:
        return AlignTask(self)


def build_model(
    options: AlignOptions, texts: list[str]
) -> tuple[AlignmentModel, PreTrainedTokenizerBase]:
    """A fresh model and its tokenizer; pretrained encoders are downloaded (or read) here."""
    if options.text_encoder == BUILTIN_TEXT:
        tokenizer = word_tokenizer(vocabulary_from_texts(texts), max_length=MAX_TEXT_LENGTH)
    else:
        tokenizer = from_pretrained(AutoTokenizer.from_pretrained, options.text_encoder)
    config = AlignmentConfig(
        **{name: getattr(options, name) for name in MODEL_OPTIONS},
        vocab_size=len(tokenizer),
        max_text_length=MAX_TEXT_LENGTH,
        proposer=PROPOSER_DIRECTORY if options.proposer else None,
    )
    try:
        model = AlignmentModel(config, load_pretrained_encoders=True)
    except OSError as exc:
        raise TrainingError(f"cannot load a pretrained encoder: {exc}") from None
    return model, tokenizer


def copy_image_encoder(source: NativeGroundingModel, target: AlignmentModel) -> None:
    """Give ``target`` the image encoder and image context of ``source``."""
    for name in ("image_encoder", "image_context"):
        try:
            getattr(target, name).load_state_dict(getattr(source, name).state_dict())
        except RuntimeError:
            raise TrainingError(
                f"the proposer's {name} does not fit this model: give the model the proposer's "
                "sizes (image_encoder, hidden_size, image_layers, attention_heads)"
            ) from None


class RegionCollator:
    """Stack images, pad their regions (normalised x1, y1, x2, y2), tokenize the sentences;
    ``image_index`` maps sentence to image."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: AlignmentConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config

    @staticmethod
    def regions(item: dict[str, Any]) -> tuple[np.ndarray, list[int]]:
        """The image's regions (its objects if the data lists them, else its samples'
        distinct boxes) and the index of each sentence's own among them."""
        listed = [row[:4] for row in item.get("objects", [])]
        boxes = np.unique(np.asarray(listed or item["boxes"], dtype=np.float64), axis=0)
        regions = cxcywh_to_xyxy(boxes).clip(0, 1)
        targets = cxcywh_to_xyxy(np.asarray(item["boxes"], dtype=np.float64).reshape(-1, 4))
        overlaps = iou_matrix(targets, regions)
        best = overlaps.argmax(axis=1)
        own = np.where(overlaps.max(axis=1) >= OWN_REGION_IOU, best, -1)
        return regions, own.tolist()

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        regions, own = zip(*(self.regions(item) for item in items))
        most = max(len(r) for r in regions)
        boxes = torch.zeros(len(items), most, 4)
        mask = torch.zeros(len(items), most, dtype=torch.bool)
        for row, image_regions in enumerate(regions):
            boxes[row, : len(image_regions)] = torch.from_numpy(image_regions)
            mask[row, : len(image_regions)] = True
        sentences = [q for item in items for q in item["queries"]]
        text = tokenize(self.tokenizer, sentences, self.config)
        return {
            "pixel_values": torch.from_numpy(np.stack([item["pixels"] for item in items])),
            "region_boxes": boxes,
            "region_mask": mask,
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "image_index": torch.tensor(
                [i for i, item in enumerate(items) for _ in item["queries"]], dtype=torch.long
            ),
            "target_region": torch.tensor(
                [i for indices in own for i in indices], dtype=torch.long
            ),
        }


class AlignTask(NativeTask):
    """The alignment model on a samples file (and its scenes, when it has them).

    Reads its data as the native grounder's task does (:meth:`NativeTask.prepare`) and
    takes its loss the same way (the model's output); the model, batches, validation and
    saving are its own.
    """

    metrics = ("val_acc", "val_recall@5")
    options: AlignOptions  # type: ignore[assignment]
    config: AlignmentConfig  # type: ignore[assignment]
    proposer: NativeGroundingModel

    def build_model(self, resume_from: Path | None) -> AlignmentModel:
        if resume_from is not None:
            model = AlignmentModel.from_pretrained(resume_from)
            self.tokenizer = AutoTokenizer.from_pretrained(resume_from)
            where = proposer_path(model.config, resume_from)
        else:
            model, self.tokenizer = build_model(self.options, self.texts)
            where = Path(self.options.proposer or BUNDLED)
        self.proposer = from_pretrained(NativeGroundingModel.from_pretrained, str(where))
        if resume_from is None and self.options.image_encoder_from_proposer:
            copy_image_encoder(self.proposer, model)
        self.config = model.config
        return model

    def dataset(self) -> GroundingDataset:
        options, scenes = self.options, self.scenes
        return GroundingDataset(
            self.groups, self.config.image_size, seed=options.seed, augment=options.augment,
            cache_images=options.cache_images and options.num_workers == 0, scenes=scenes,
            attributes=scenes.attributes() if scenes is not None else None,
        )  # fmt: skip

    def collator(self) -> RegionCollator:
        return RegionCollator(self.tokenizer, self.config)

    #: One learning rate for all (the grounder's groups are its own parts').
    parameter_groups = TrainingTask.parameter_groups

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """Acc@0.5 and recall@5 of the proposals ranked for each validation sample, through
        the serving backend and the code of ``sceneloc evaluate``."""
        options = self.options
        proposer = self.proposer.to(next(model.parameters()).device)
        backend = AlignmentBackend(model, self.tokenizer, proposer)
        result = evaluate_model(
            options.val, Grounder(backend, "validation"), threshold=0.0, limit=options.val_limit
        )
        summary = summarize(np.asarray(result.ious), np.asarray(result.hit_ranks))
        return {"val_acc": summary["acc@0.5"], "val_recall@5": summary["recall@5"]}

    def save(self, model: torch.nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        if self.options.proposer:
            self.proposer.save_pretrained(directory / PROPOSER_DIRECTORY)
