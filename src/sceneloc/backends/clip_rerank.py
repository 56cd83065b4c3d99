"""Propose and rank: an object detector proposes boxes, CLIP picks the ones a query describes.

The image-level work is done once per call: the detector runs once and every proposal's
crop is embedded once; each query then costs one text embedding and a dot product.

Proposals are the detector's boxes scoring above ``detector_threshold`` for any class,
the same box proposed under several classes kept once, at most ``max_proposals`` of them,
most confident first. The whole image is not a proposal: CLIP matches whole photographs
best, so it would outrank the regions a query is about. Each crop is padded to a square
with CLIP's mean colour so that CLIP's centre crop sees all of the box.

A candidate's score is the softmax, over the proposals, of CLIP's logits (``logit_scale``
times the cosine similarity of crop and query): the probability that this box rather than
another proposal is the one the query describes. It depends on the image's proposals,
never on the other queries asked; a query's scores sum to 1, so the default threshold of
0.1 keeps the boxes CLIP clearly prefers.

A pipeline fine-tuned by ``sceneloc finetune`` also has a learned head
(:mod:`~sceneloc.backends.clip_head`) that scores each proposal on its own: the score is
then the head's probability that the box is the referent. The same default threshold
keeps the boxes with at least one chance in ten, as for similarity; an image without the
referent can now have no box above it.

A checkpoint is a plain CLIP model (the default detector proposes) or a directory whose
``config.json`` is ``{"model_type": "sceneloc-clip-rerank", "clip": ..., "detector": ...}``
with optional ``max_proposals``, ``detector_threshold`` and ``head`` (the head's folder);
relative paths in it are read against the directory. Keyword options given to
:func:`sceneloc.load` win over both (``head="none"`` scores by similarity).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForObjectDetection,
    AutoProcessor,
    BaseImageProcessor,
    PreTrainedModel,
    ProcessorMixin,
)

from sceneloc.backends.base import Backend, from_pretrained, to_model
from sceneloc.backends.clip_head import ClipRerankHead, box_features
from sceneloc.boxes import Box, clip_box, is_inside
from sceneloc.candidates import Candidates
from sceneloc.errors import ModelNotFoundError, SceneLocError
from sceneloc.registry import (
    Capability,
    Model,
    ModelSettings,
    Task,
    read_config,
    register_backend,
)

logger = logging.getLogger(__name__)

PIPELINE_TYPE = "sceneloc-clip-rerank"
#: RT-DETR R50: a strong COCO detector needing neither timm nor torchvision.
DEFAULT_DETECTOR = "PekingU/rtdetr_r50vd"
#: Settings a pipeline's ``config.json`` may hold besides ``model_type``, ``clip``, ``detector``
#: and ``head``.
SETTINGS = ("max_proposals", "detector_threshold")
#: The ``head`` option that turns a pipeline's head off: proposals ranked by similarity.
NO_HEAD = "none"


def square_crop(image: Image.Image, box: Box, fill: tuple[int, ...]) -> Image.Image:
    """The pixels of ``box`` (clipped to the image, at least 1 px), centred on a square."""
    x1, y1, x2, y2 = clip_box(box, image.width, image.height)
    left, top = min(math.floor(x1), image.width - 1), min(math.floor(y1), image.height - 1)
    right, bottom = max(left + 1, math.ceil(x2)), max(top + 1, math.ceil(y2))
    crop = image.crop((left, top, right, bottom))
    side = max(crop.size)
    square = Image.new("RGB", (side, side), fill)
    square.paste(crop, ((side - crop.width) // 2, (side - crop.height) // 2))
    return square


def read_pipeline(checkpoint: str) -> tuple[str, str | None, dict[str, Any]]:
    """``(clip, detector, settings)`` named by a checkpoint; a plain CLIP names only itself.

    ``settings`` holds the pipeline's :data:`SETTINGS` and, where it has one, ``head``: the
    path of its head's folder.
    """
    config = read_config(checkpoint)
    if config.get("model_type") != PIPELINE_TYPE:
        return checkpoint, None, {}
    if "clip" not in config:
        raise ModelNotFoundError(f"{checkpoint}/config.json names no 'clip' model")
    unknown = set(config) - {"model_type", "clip", "detector", "head", *SETTINGS}
    if unknown:
        logger.warning("ignoring unknown keys in %s/config.json: %s", checkpoint, sorted(unknown))
    base = Path(checkpoint).expanduser()

    def locate(name: str) -> str:
        """A path relative to the pipeline directory, else the name itself (a hub id)."""
        local = base / name
        return str(local) if base.is_dir() and local.exists() else name

    detector = config.get("detector")
    settings = {key: config[key] for key in SETTINGS if key in config}
    if config.get("head"):
        settings["head"] = locate(config["head"])
    return locate(config["clip"]), locate(detector) if detector else None, settings


@register_backend(
    "clip-rerank",
    tasks=[Task.LOCATE],
    model_types=("clip", PIPELINE_TYPE),
    capabilities=[
        Capability.RANKED_CANDIDATES,
        Capability.QUERIES_BATCHED,
        Capability.IMAGE_ENCODED_ONCE,
    ],
    settings=ModelSettings(default_threshold=0.1),
    models=[
        Model(
            "clip-rerank",
            "openai/clip-vit-base-patch32",
            "RT-DETR proposes boxes, CLIP ViT-B/32 ranks their crops against the query",
        ),
    ],
)
class ClipRerankBackend(Backend):
    def __init__(
        self,
        clip: PreTrainedModel,
        processor: ProcessorMixin,
        detector: PreTrainedModel,
        detector_processor: BaseImageProcessor,
        checkpoint: str | None = None,
        max_proposals: int = 100,
        detector_threshold: float = 0.05,
        crop_batch_size: int = 64,
        head: ClipRerankHead | None = None,
    ) -> None:
        """``clip`` and ``detector`` on one device, in one dtype.

        ``detector_threshold`` is low since CLIP, not the detector's closed set of classes,
        decides what a box shows. ``crop_batch_size``: crops per CLIP forward pass, which
        bounds memory. ``head``: a learned head that scores the proposals (it runs in
        fp32 wherever it is), else CLIP similarity does.
        """
        super().__init__(clip, checkpoint)
        placement = next(detector.parameters())
        if (placement.device, placement.dtype) != (self.device, self.dtype):
            raise ValueError(
                f"CLIP is on {self.device} in {self.dtype} but the detector on "
                f"{placement.device} in {placement.dtype}"
            )
        if max_proposals < 1 or crop_batch_size < 1:
            raise SceneLocError("max_proposals and crop_batch_size must be at least 1")
        self.clip = clip.eval()
        self.processor = processor
        self.detector = detector.eval()
        self.detector_processor = detector_processor
        self.detector_name = detector.name_or_path
        self.max_proposals = int(max_proposals)
        self.detector_threshold = float(detector_threshold)
        self.crop_batch_size = crop_batch_size
        mean = self.processor.image_processor.image_mean
        self.fill = tuple(round(255 * m) for m in mean)
        self.max_text_len = int(self.clip.config.text_config.max_position_embeddings)
        self.head = head.eval() if head is not None else None

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str,
        device: torch.device,
        dtype: torch.dtype,
        detector: str | None = None,
        head: str | None = None,
        **options: Any,
    ) -> ClipRerankBackend:
        """``detector``, ``head`` (a head's folder, or ``"none"`` for similarity) and the
        keyword ``options`` of ``__init__`` override the pipeline's ``config.json``, which
        overrides the defaults."""
        clip, named_detector, settings = read_pipeline(checkpoint)
        detector_name = detector or named_detector or DEFAULT_DETECTOR
        named_head = settings.pop("head", None)
        head_dir = head or named_head
        logger.info(
            "clip-rerank: CLIP %s, proposals from %s, scored by %s", clip, detector_name,
            "similarity" if head_dir in (None, NO_HEAD) else f"the head in {head_dir}",
        )  # fmt: skip
        settings |= {key: value for key, value in options.items() if value is not None}
        if head_dir not in (None, NO_HEAD):
            settings["head"] = ClipRerankHead.load(head_dir).to(device)
        return cls(
            from_pretrained(AutoModel.from_pretrained, clip).to(device=device, dtype=dtype),
            from_pretrained(AutoProcessor.from_pretrained, clip),
            from_pretrained(AutoModelForObjectDetection.from_pretrained, detector_name).to(
                device=device, dtype=dtype
            ),
            from_pretrained(AutoImageProcessor.from_pretrained, detector_name),
            checkpoint,
            **settings,
        )

    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        boxes = self.propose(image)
        if not boxes.shape[0]:
            return [Candidates.empty() for _ in queries]
        crops = self.embed_crops([square_crop(image, box, self.fill) for box in boxes.tolist()])
        text = self.embed_queries(queries)
        if self.head is not None:
            scores = self.head_scores(crops, text, box_features(boxes, *image.size))
        else:
            logits = self.clip.logit_scale.exp().float() * text @ crops.T
            scores = logits.softmax(dim=-1)
        return [Candidates.of(boxes, row, query) for query, row in zip(queries, scores)]

    def head_scores(
        self, crops: torch.Tensor, text: torch.Tensor, places: torch.Tensor
    ) -> torch.Tensor:
        """``(queries, proposals)`` probabilities, from the head, that each box is the
        referent of each query."""
        assert self.head is not None
        device = next(self.head.parameters()).device
        n, m = text.shape[0], crops.shape[0]
        logits = self.head(
            crops.to(device).repeat(n, 1),
            text.to(device).repeat_interleave(m, dim=0),
            places.to(device).repeat(n, 1),
        )
        return logits.float().sigmoid().reshape(n, m).cpu()

    def propose(self, image: Image.Image) -> torch.Tensor:
        """Up to ``max_proposals`` distinct boxes overlapping the image, most confident first."""
        pixels = self.detector_processor(images=image, return_tensors="pt")
        outputs = self.detector(**to_model(pixels, self.device, self.dtype))
        outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
        (found,) = self.detector_processor.post_process_object_detection(
            outputs, threshold=self.detector_threshold, target_sizes=[(image.height, image.width)]
        )
        order = found["scores"].argsort(descending=True, stable=True)
        seen: set[tuple[float, ...]] = set()
        kept: list[list[float]] = []
        for box in found["boxes"][order].cpu().tolist():
            key = tuple(box)
            if key in seen or not is_inside(box, image.width, image.height):
                continue
            seen.add(key)
            kept.append(box)
            if len(kept) == self.max_proposals:
                break
        return torch.tensor(kept, dtype=torch.float32).reshape(-1, 4)

    def embed_crops(self, crops: list[Image.Image]) -> torch.Tensor:
        """Unit CLIP embeddings of the crops, ``crop_batch_size`` at a time."""
        step = self.crop_batch_size
        chunks = []
        for start in range(0, len(crops), step):
            pixels = self.processor.image_processor(
                images=crops[start : start + step], return_tensors="pt"
            )
            features = self.clip.get_image_features(**to_model(pixels, self.device, self.dtype))
            chunks.append(features.pooler_output.float())
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1).cpu()

    def embed_queries(self, queries: list[str]) -> torch.Tensor:
        """Unit CLIP embeddings of the queries (cut to the text tower's length)."""
        tokens = self.processor.tokenizer(
            queries,
            padding=True,
            truncation=True,
            max_length=self.max_text_len,
            return_tensors="pt",
        )
        features = self.clip.get_text_features(**tokens.to(self.device)).pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()
