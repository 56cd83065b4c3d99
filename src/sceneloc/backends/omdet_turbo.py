"""OmDet-Turbo: a real-time open-vocabulary detector scoring boxes against class names.

The model reads two texts: the class names, each scored against every box by its own
sigmoid, and a task sentence ("Detect cat, remote.") its decoder attends to. The classes
asked together are not independent: the decoder starts from the image positions that best
match *any* class, the task sentence names them all, and the post-processing keeps the best
(box, class) pairs over all classes. So each query here is a detection of its own, the
query as the one class and the task sentence written for it alone ("Detect {query}.", the
processor's default). The image side (Swin backbone and hybrid encoder) reads no text: it
runs once per call and its features go to every query's decoder, run on queries in batches
(each row its own class and task; task padding is masked), so a query gets what it gets
when asked alone. The model's own parts are called in the order its forward calls them,
so nothing in its module tree is replaced.

transformers' ``OmDetTurboProcessor`` needs torchvision (it takes ``batched_nms`` from it),
which must not be a requirement here: the image goes through ``DetrImageProcessorPil`` with
the checkpoint's own settings, the texts through its CLIP tokenizer with the processor's
settings, and ``post_process_grounded_object_detection`` is reproduced with sceneloc's NMS.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    DetrImageProcessorPil,
    OmDetTurboConfig,
    OmDetTurboForObjectDetection,
    PreTrainedTokenizerBase,
)

from sceneloc import boxes as geometry
from sceneloc.backends.base import Backend, from_pretrained
from sceneloc.candidates import Candidates
from sceneloc.errors import UnsupportedModelError
from sceneloc.registry import Capability, Model, ModelSettings, Task, register_backend

logger = logging.getLogger(__name__)

#: The processor's default task sentence for one class; ``{query}`` stands for the query.
DEFAULT_TASK_SENTENCE = "Detect {query}."
#: The processor pads and cuts every class name and task sentence to CLIP's 77 tokens.
TEXT_LENGTH = 77
#: Boxes overlapping a better one of the same query by more IoU than this are dropped
#: (the value of the model card's and transformers' documented usage).
NMS_THRESHOLD = 0.3


@register_backend(
    "omdet-turbo",
    tasks=[Task.LOCATE],
    model_types=("omdet-turbo",),
    capabilities=[
        Capability.RANKED_CANDIDATES,
        Capability.QUERIES_BATCHED,
        Capability.IMAGE_ENCODED_ONCE,
        Capability.SAFE_TO_TILE,
    ],
    # The processor's and the model card's threshold.
    settings=ModelSettings(default_threshold=0.3),
    models=[
        Model(
            "omdet-turbo",
            "omlab/omdet-turbo-swin-tiny-hf",
            "OmDet-Turbo Swin-T; fast open-vocabulary detector for class names (needs timm)",
        ),
    ],
)
class OmDetTurboBackend(Backend):
    def __init__(
        self,
        model: OmDetTurboForObjectDetection,
        image_processor: DetrImageProcessorPil,
        tokenizer: PreTrainedTokenizerBase,
        checkpoint: str | None = None,
        task_sentence: str = DEFAULT_TASK_SENTENCE,
        nms_threshold: float = NMS_THRESHOLD,
        query_batch_size: int | None = None,
    ) -> None:
        """``task_sentence``: what the decoder reads besides the class name, ``{query}``
        replaced by each query (a sentence without it is read as is for every query).
        ``nms_threshold``: the IoU above which a query's lesser box is dropped.
        ``query_batch_size``: queries per decoder pass (default: 1 on CPU, 8 elsewhere, as
        for Grounding DINO)."""
        super().__init__(model, checkpoint)
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.task_sentence = task_sentence
        self.nms_threshold = nms_threshold
        self.query_batch_size = query_batch_size or (1 if self.device.type == "cpu" else 8)

    @classmethod
    def from_pretrained(
        cls, checkpoint: str, device: torch.device, dtype: torch.dtype, **options: Any
    ) -> OmDetTurboBackend:
        """``options`` are those of ``__init__`` (``task_sentence``, ``nms_threshold``,
        ``query_batch_size``)."""
        config = from_pretrained(OmDetTurboConfig.from_pretrained, checkpoint)
        _require_timm_if_used(config, checkpoint)
        image_processor = from_pretrained(DetrImageProcessorPil.from_pretrained, checkpoint)
        tokenizer = from_pretrained(AutoTokenizer.from_pretrained, checkpoint)
        model = from_pretrained(
            OmDetTurboForObjectDetection.from_pretrained, checkpoint, config=config
        )
        model = model.to(device=device, dtype=dtype)
        return cls(model, image_processor, tokenizer, checkpoint, **options)

    def task_sentence_for(self, query: str) -> str:
        return self.task_sentence.replace("{query}", query)

    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        pixels = self.image_processor(images=image, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(device=self.device, dtype=self.dtype)
        # The image side of the model's forward, once for all queries.
        features = self.model.encoder(
            self.model.vision_backbone(pixels), return_dict=True
        ).extracted_states
        size = (image.height, image.width)
        step = self.query_batch_size
        return [
            found
            for start in range(0, len(queries), step)
            for found in self._detect(features, queries[start : start + step], size, threshold)
        ]

    def _detect(
        self,
        features: list[torch.Tensor],
        queries: list[str],
        size: tuple[int, int],
        threshold: float,
    ) -> list[Candidates]:
        """The text side of the model's forward and its post-processing, one row per query."""
        batch = len(queries)
        classes = self._tokens(queries)
        tasks = self._tokens([self.task_sentence_for(q) for q in queries])
        class_features, task_features, task_mask = self.model.get_language_embedding(
            classes["input_ids"],
            classes["attention_mask"],
            tasks["input_ids"],
            tasks["attention_mask"],
            classes_structure=torch.ones(batch, dtype=torch.long, device=self.device),
        )
        decoded = self.model.decoder(
            [f.expand(batch, *f.shape[1:]) for f in features],
            class_features,
            task_features,
            task_mask,
            return_dict=True,
        )
        boxes = decoded.decoder_coords[-1].float()  # (batch, queries, 4), relative cxcywh
        scores = decoded.decoder_classes[-1].float().sigmoid()[..., 0]  # the one class
        return [
            self._post_process(b, s, size, threshold, query)
            for b, s, query in zip(boxes, scores, queries)
        ]

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids as the processor makes them: padded and cut to 77 tokens."""
        encoded = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=TEXT_LENGTH,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        return {key: value.to(self.device) for key, value in encoded.items()}

    def _post_process(
        self,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        size: tuple[int, int],
        threshold: float,
        query: str,
    ) -> Candidates:
        """The processor's post-processing for one class: every box scoring above the
        threshold, in pixels, after NMS (clipping is left to the caller)."""
        height, width = size
        kept = scores > threshold
        corners = geometry.cxcywh_to_xyxy(boxes[kept]) * boxes.new_tensor([width, height] * 2)
        return Candidates.of(corners, scores[kept], query).nms(self.nms_threshold)


def _require_timm_if_used(config: OmDetTurboConfig, checkpoint: str) -> None:
    """The released checkpoint's Swin backbone is timm's; say so in one line if timm is
    missing or does not load (timm needs a torchvision that matches torch)."""
    if getattr(config.backbone_config, "model_type", None) != "timm_backbone":
        return
    try:
        importlib.import_module("timm")
    except Exception as exc:  # ImportError, or torchvision's operator errors on import
        logger.debug("importing timm failed: %s", exc)
        raise UnsupportedModelError(
            f"cannot load {checkpoint!r}: its vision backbone is timm's, and timm does not "
            f"import here ({type(exc).__name__}); pip install timm, with a torchvision built "
            "for the installed torch"
        ) from None
