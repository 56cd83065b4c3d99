"""Fine-tuning the CLIP re-ranker: a small head learns which proposals a query describes.

CLIP and the detector stay frozen, so their work is done once, before the first step
(:meth:`ClipRerankRecipe.training_items`): the detector proposes boxes on each training
image (as the backend does), CLIP embeds every proposal's crop and every query. A
proposal is a positive when its IoU with one of the sample's target boxes is at least
:data:`POSITIVE_IOU`, and the target boxes themselves are positives too (so a query the
detector misses still teaches); the rest are negatives, at most :data:`MAX_NEGATIVES` per
query, the hardest first: those CLIP already finds most like the query, the ones plain
similarity would wrongly pick. Queries whose referent is absent (``absent_fraction``) have
negatives only. The loss is binary cross-entropy on each (crop, query) pair: the head's
sigmoid is then a probability that the box is the referent, which a threshold can use
(and which says "not there" by scoring every box low), where a ranking loss would only
order the boxes.

The items are computed once from the dataset as it is at epoch 0 (a flip, where the
dataset makes one, stays for the run). A fresh head starts out ranking as plain
similarity does, so the validation before training is plain CLIP similarity's figure.

``best/`` and ``last/`` are clip-rerank pipeline directories: ``config.json`` naming the
CLIP and the detector the run started from (hub ids as given, local folders by absolute
path: the frozen models are not copied), the pipeline's settings, and ``head/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel

from sceneloc.backends.clip_head import HEAD_DIR, ClipRerankHead, HeadConfig, box_features
from sceneloc.backends.clip_rerank import (
    DEFAULT_DETECTOR,
    PIPELINE_TYPE,
    ClipRerankBackend,
    read_pipeline,
    square_crop,
)
from sceneloc.boxes import iou_matrix
from sceneloc.registry import resolve
from sceneloc.training.finetune.recipe import FinetuneItem, Recipe
from sceneloc.training.options import TrainingError
from sceneloc.training.task import EpochDataset

logger = logging.getLogger(__name__)

#: IoU with a target box from which a proposal counts as the referent (Acc@0.5's).
POSITIVE_IOU = 0.5
#: Negatives kept per query, the ones CLIP finds most like the query first.
MAX_NEGATIVES = 64
#: Images between progress lines while the features are computed.
LOG_EVERY = 100


class ClipRerankModel(nn.Module):
    """The frozen CLIP and detector with the head that learns; ``forward`` is the head's."""

    def __init__(self, clip: PreTrainedModel, detector: PreTrainedModel, head: ClipRerankHead):
        super().__init__()
        self.clip = clip.requires_grad_(False).eval()
        self.detector = detector.requires_grad_(False).eval()
        self.head = head

    def forward(self, image: torch.Tensor, text: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.head(image, text, boxes)

    def train(self, mode: bool = True) -> ClipRerankModel:
        """Only the head trains: CLIP and the detector stay in inference mode."""
        super().train(mode)
        self.clip.eval()
        self.detector.eval()
        return self


@dataclass
class QueryCrops:
    """One query's training pairs: its text embedding against some crops and their labels."""

    text: torch.Tensor  # (d,)
    image: torch.Tensor  # (k, d) unit crop embeddings
    boxes: torch.Tensor  # (k, 5) box_features
    labels: torch.Tensor  # (k,) 1.0 for the referent


class CropFeatures:
    """The precomputed items; fixed, so an epoch changes nothing."""

    def __init__(self, items: list[QueryCrops]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> QueryCrops:
        return self.items[index]

    def set_epoch(self, epoch: int) -> None:
        pass


def label_proposals(proposals: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``1.0`` for each proposal whose IoU with some target is at least :data:`POSITIVE_IOU`;
    with no targets (an absent referent), all ``0.0``."""
    if not len(proposals) or not len(targets):
        return np.zeros(len(proposals), dtype=np.float32)
    best = iou_matrix(proposals, targets).max(axis=1)
    return (best >= POSITIVE_IOU).astype(np.float32)


def choose_pairs(
    labels: np.ndarray, similarity: np.ndarray, max_negatives: int = MAX_NEGATIVES
) -> np.ndarray:
    """Indices of the pairs a query trains on: every positive, then the negatives most
    similar to the query (the hardest for plain similarity), at most ``max_negatives``."""
    positives = np.flatnonzero(labels >= 0.5)
    negatives = np.flatnonzero(labels < 0.5)
    hardest = negatives[np.argsort(-similarity[negatives], kind="stable")][:max_negatives]
    return np.concatenate([positives, hardest]).astype(np.int64)


class ClipRerankRecipe(Recipe):
    family = "clip-rerank"
    defaults: ClassVar[dict[str, Any]] = {
        "lr": 3e-3, "epochs": 30, "batch_size": 16, "weight_decay": 1e-4, "warmup_fraction": 0.0,
    }  # fmt: skip

    def load(self, checkpoint: str) -> ClipRerankModel:
        if self.options.lora_rank:
            raise TrainingError(
                "the CLIP re-ranker trains only its small head (CLIP stays frozen): LoRA does "
                "not apply; leave lora_rank at 0"
            )
        checkpoint = resolve(checkpoint, "locate").checkpoint
        clip_name, detector_name, settings = read_pipeline(checkpoint)
        head_dir = settings.pop("head", None)
        loaded = ClipRerankBackend.from_pretrained(checkpoint, torch.device("cpu"), torch.float32)
        self.processor, self.detector_processor = loaded.processor, loaded.detector_processor
        self.fresh_head = loaded.head is None
        clip, detector = loaded.clip, loaded.detector
        head = loaded.head or ClipRerankHead(HeadConfig(embed_dim=int(clip.config.projection_dim)))
        detector_name = detector_name or DEFAULT_DETECTOR
        self.names = {"clip": portable(clip_name), "detector": portable(detector_name)}
        self.settings = settings
        logger.info(
            "clip-rerank: %s head on CLIP %s, proposals from %s",
            "a fresh" if self.fresh_head else f"the {head_dir}", clip_name, detector_name,
        )  # fmt: skip
        return ClipRerankModel(clip, detector, head)

    def towers(self) -> dict[str, tuple[str, ...]]:
        return {"vision": ("clip.vision_model.", "clip.visual_projection.", "detector."),
                "text": ("clip.text_model.", "clip.text_projection.")}  # fmt: skip

    def backend(self, model: nn.Module) -> ClipRerankBackend:
        return ClipRerankBackend(
            model.clip, self.processor, model.detector, self.detector_processor,
            head=model.head, **self.settings,
        )  # fmt: skip

    def training_items(self, model: nn.Module, dataset: EpochDataset) -> CropFeatures:
        """Every item's query against its image's proposals and its targets, as CLIP
        features (the detector and CLIP run once per distinct image)."""
        if torch.cuda.is_available():
            model.to(torch.device("cuda", torch.cuda.current_device()))
        backend = self.backend(model)
        images: dict[str, tuple[np.ndarray, torch.Tensor]] = {}
        items: list[QueryCrops] = []
        cosines: list[torch.Tensor] = []
        positives = 0
        with torch.inference_mode():
            for index in range(len(dataset)):
                item: FinetuneItem = dataset[index]
                key = hashlib.sha1(item.image.tobytes()).hexdigest() + str(item.image.size)
                if key not in images:
                    proposals = backend.propose(item.image).numpy()
                    images[key] = proposals, embed(backend, item.image, proposals)
                    if len(images) % LOG_EVERY == 0:
                        logger.info("clip-rerank: features of %d images", len(images))
                proposals, crops = images[key]
                targets = np.asarray(item.boxes, dtype=np.float32).reshape(-1, 4)
                boxes = np.concatenate([proposals, targets])
                image = torch.cat([crops, embed(backend, item.image, targets)])
                labels = np.concatenate([label_proposals(proposals, targets),
                                         np.ones(len(targets), dtype=np.float32)])  # fmt: skip
                text = backend.embed_queries([item.query])[0]
                similarity = (image @ text).numpy()
                keep = choose_pairs(labels, similarity)
                if not len(keep):
                    continue
                places = box_features(torch.from_numpy(boxes[keep]), *item.image.size)
                items.append(QueryCrops(text.clone(), image[keep].clone(), places,
                                        torch.from_numpy(labels[keep])))  # fmt: skip
                cosines.append(torch.from_numpy(similarity[keep]))
                positives += int(labels[keep].sum())
        if not items:
            raise TrainingError("the detector proposed no box on any training image")
        if self.fresh_head:
            model.head.start_from_similarity(torch.cat(cosines))
        pairs = sum(len(item.labels) for item in items)
        logger.info(
            "clip-rerank: %d queries on %d images, %d pairs (%d positive)",
            len(items), len(images), pairs, positives,
        )  # fmt: skip
        return CropFeatures(items)

    def collate(self, items: list[QueryCrops]) -> dict[str, Any]:
        return {
            "image": torch.cat([item.image for item in items]),
            "text": torch.cat([item.text.expand(len(item.labels), -1) for item in items]),
            "boxes": torch.cat([item.boxes for item in items]),
            "labels": torch.cat([item.labels for item in items]),
        }

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logits = model(image=batch["image"], text=batch["text"], boxes=batch["boxes"])
        return F.binary_cross_entropy_with_logits(logits.float(), batch["labels"].float())

    def save(self, model: nn.Module, directory: Path) -> None:
        """A pipeline directory: ``config.json`` naming CLIP and the detector, and ``head/``."""
        directory.mkdir(parents=True, exist_ok=True)
        model.head.save(directory / HEAD_DIR)
        config = {"model_type": PIPELINE_TYPE, **self.names, "head": HEAD_DIR, **self.settings}
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def embed(backend: ClipRerankBackend, image: Any, boxes: np.ndarray) -> torch.Tensor:
    """Unit CLIP embeddings of the boxes' crops, as the backend makes them."""
    if not len(boxes):
        return torch.zeros(0, backend.clip.config.projection_dim)
    return backend.embed_crops([square_crop(image, box, backend.fill) for box in boxes.tolist()])


def portable(name: str) -> str:
    """A local folder by its absolute path (the checkpoint may be read from elsewhere),
    else the name as given (a hub id)."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name
