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

The released checkpoint's Swin backbone is timm's, and timm needs torchvision too: its
weights are converted at load time to transformers' own ``SwinBackbone``
(:mod:`sceneloc.backends.timm_swin`), which computes the same features, so the model served
for it is transformers' OmDet-Turbo with transformers' Swin.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoTokenizer,
    DetrImageProcessorPil,
    OmDetTurboConfig,
    OmDetTurboForObjectDetection,
    PreTrainedTokenizerBase,
)
from transformers.utils import SAFE_WEIGHTS_NAME, cached_file

from sceneloc import boxes as geometry
from sceneloc.backends import timm_swin
from sceneloc.backends.base import Backend, from_pretrained
from sceneloc.candidates import Candidates
from sceneloc.errors import UnsupportedModelError
from sceneloc.registry import Capability, Model, ModelSettings, Task, register_backend

#: The processor's default task sentence for one class; ``{query}`` stands for the query.
DEFAULT_TASK_SENTENCE = "Detect {query}."
#: The processor pads and cuts every class name and task sentence to CLIP's 77 tokens.
TEXT_LENGTH = 77
#: Boxes overlapping a better one of the same query by more IoU than this are dropped
#: (the value of the model card's and transformers' documented usage).
NMS_THRESHOLD = 0.3
#: Where OmDet-Turbo keeps its vision backbone, and where transformers' ``TimmBackbone``
#: keeps the timm model inside it.
BACKBONE = "vision_backbone.vision_backbone."
TIMM_MODEL = BACKBONE + "_backbone."
#: The timm backbone transformers' OmDet-Turbo configuration takes when config.json names none.
DEFAULT_TIMM_BACKBONE = {"backbone": "swin_tiny_patch4_window7_224", "out_indices": [1, 2, 3]}


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
            "OmDet-Turbo Swin-T; fast open-vocabulary detector for class names",
        ),
    ],
)
class OmDetTurboBackend(Backend):
    #: The processor resizes to a 640 px square.
    input_side = 640

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
        config, _ = from_pretrained(OmDetTurboConfig.get_config_dict, checkpoint)
        timm_backbone = _timm_backbone(config)
        image_processor = from_pretrained(DetrImageProcessorPil.from_pretrained, checkpoint)
        tokenizer = from_pretrained(AutoTokenizer.from_pretrained, checkpoint)
        if timm_backbone is None:
            model = from_pretrained(OmDetTurboForObjectDetection.from_pretrained, checkpoint)
        else:
            model = _load_with_transformers_swin(checkpoint, config, timm_backbone)
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


def _timm_backbone(config: dict[str, Any]) -> dict[str, Any] | None:
    """The timm backbone a config.json asks for (its name and timm's ``out_indices``), or
    None for transformers' own: a ``backbone_config`` of type ``timm_backbone``, or, as in
    the released checkpoint, a ``backbone`` name and ``backbone_kwargs``.

    Read here rather than by ``OmDetTurboConfig``, which asks the hub whether the name is a
    repository (offline that is an error) before taking it for timm's.
    """
    if config.get("backbone_config") is not None:
        backbone = config["backbone_config"]
        return backbone if backbone.get("model_type") == "timm_backbone" else None
    if not config.get("use_timm_backbone", True):
        return None
    named = {"backbone": config["backbone"]} if config.get("backbone") else {}
    return {**DEFAULT_TIMM_BACKBONE, **named, **(config.get("backbone_kwargs") or {})}


def _load_with_transformers_swin(
    checkpoint: str, config: dict[str, Any], timm_backbone: dict[str, Any]
) -> OmDetTurboForObjectDetection:
    """OmDet-Turbo whose timm Swin weights are loaded into transformers' ``SwinBackbone``.

    OmDet-Turbo normalises timm's feature maps with its own layer norms
    (``apply_layernorm_after_vision_backbone``); ``SwinBackbone`` normalises its feature maps
    itself (``hidden_states_norms``), so those norms' weights go there and OmDet-Turbo's own
    step is turned off. Its layers then take timm's order of shift and pad.
    """
    name = timm_backbone["backbone"]
    if not name.startswith(("swin_tiny_", "swin_small_", "swin_base_", "swin_large_")):
        raise UnsupportedModelError(
            f"cannot load {checkpoint!r}: its vision backbone is timm's {name!r}, and sceneloc "
            "runs timm's Swin Transformer only (timm itself needs torchvision)"
        )
    weights = load_file(from_pretrained(cached_file, checkpoint, filename=SAFE_WEIGHTS_NAME))
    timm_weights = {
        key.removeprefix(TIMM_MODEL): weights.pop(key)
        for key in list(weights)
        if key.startswith(TIMM_MODEL)
    }
    # transformers' default Swin configuration first (no timm backbone), then the converted one.
    timm_keys = ("backbone_config", "backbone", "backbone_kwargs", "use_timm_backbone")
    omdet = OmDetTurboConfig.from_dict(
        {key: value for key, value in config.items() if key not in timm_keys}
        | {"use_timm_backbone": False, "apply_layernorm_after_vision_backbone": False}
    )
    omdet.backbone_config = timm_swin.swin_config(
        timm_weights, timm_backbone["out_indices"], omdet.image_size
    )
    weights |= {
        BACKBONE + key: value for key, value in timm_swin.swin_weights(timm_weights).items()
    }
    for index, stage in enumerate(omdet.backbone_config.out_features):
        for kind in ("weight", "bias"):
            # Also left where they were, unused, so that no weight is left random.
            weights[f"{BACKBONE}hidden_states_norms.{stage}.{kind}"] = weights[
                f"vision_backbone.layer_norms.{index}.{kind}"
            ]
    model, loading = OmDetTurboForObjectDetection.from_pretrained(
        None, config=omdet, state_dict=weights, output_loading_info=True
    )
    unmatched = sorted(loading["missing_keys"] | loading["unexpected_keys"])
    if unmatched:
        raise UnsupportedModelError(
            f"cannot load {checkpoint!r}: its timm Swin weights do not all convert to "
            f"transformers' Swin ({len(unmatched)} unmatched, such as {unmatched[0]!r})"
        )
    timm_swin.compute_like_timm(model.vision_backbone.vision_backbone)
    return model
