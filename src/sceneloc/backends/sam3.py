"""SAM 3 and SAM3-LiteText: every instance of a noun phrase, each with a box, a score and a mask.

SAM 3 finds all the instances of a short phrase ("a red umbrella"), not one referent: each
query's candidates are every instance scoring above the threshold. An instance's score is
what transformers' ``post_process_instance_segmentation`` reports: the probability that
this object matches the phrase times the model's presence score, a separate head that
says whether the phrase is in the image at all, so an absent phrase scores low everywhere.
SAM 3 reads a phrase, not a sentence: spatial and relational words are not understood.

The image is encoded once per call (``get_vision_features``) and its features are reused
for every query: each batch of queries runs the text encoder, the DETR encoder and decoder
and the mask decoder with those features. Every prompt is padded to the processor's fixed
length and the padding is masked, so each row gives what its query gives alone. Batches
help on a GPU; on a CPU one query at a time is the default, as for Grounding DINO.

transformers' ``Sam3ImageProcessor`` exists only with a torchvision backend, and torchvision
is no dependency of sceneloc (no wheel of it loads against the CPU torch sceneloc installs).
So when torchvision cannot be imported, :class:`Sam3TorchImageProcessor` does the same
preprocessing and post-processing in torch; when it can, transformers' own processor is
used.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    Sam3LiteTextModel,
    Sam3Model,
)
from transformers.image_processing_base import ImageProcessingMixin
from transformers.image_utils import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    PILImageResampling,
)
from transformers.models.sam3.modeling_sam3 import (
    Sam3ImageSegmentationOutput,
    Sam3VisionEncoderOutput,
)

from sceneloc.backends.base import Backend, from_pretrained, to_model, warn_if_truncated
from sceneloc.candidates import Candidates
from sceneloc.errors import ModelNotFoundError, UnsupportedModelError
from sceneloc.registry import Capability, Model, ModelSettings, Task, register_backend

#: Tokens every prompt is padded to: what ``Sam3Processor`` does with any text.
TEXT_LENGTH = 32
#: A mask pixel belongs to the object above this probability (the processor's default).
MASK_THRESHOLD = 0.5
#: How to get SAM 3's gated weights, added to the "cannot load" error.
GATED_HINT = (
    "SAM 3 checkpoints may be gated (facebook/sam3 is): accept the licence on the model's "
    "hub page, then log in (`hf auth login`) or set HF_TOKEN, or pass a local directory "
    "holding the downloaded checkpoint"
)


def torchvision_works() -> bool:
    """Whether torchvision imports: an installed wheel built for another torch fails to."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # ImportError, or RuntimeError from its operators failing to register
        return False
    return True


class Sam3TorchImageProcessor:
    """What sceneloc uses of transformers' ``Sam3ImageProcessor``, with torch and PIL only.

    Written from that processor's source (its torchvision backend) with the same
    arithmetic, so the pixels and the answers are the ones it gives:

    - preprocessing: the RGB image as ``uint8`` resized to ``size`` (bilinear, antialiased,
      through ``uint8`` as torchvision's ``resize`` does), then rescaled and normalised in
      one step, ``(x - mean / rescale_factor) / (std / rescale_factor)``;
    - post-processing (:meth:`post_process_instance_segmentation`): instance scores times
      the presence score, kept above the threshold; boxes, relative to the resized square,
      scaled by the original width and height; mask probabilities resized bilinearly to
      the original size and binarised.
    """

    def __init__(
        self,
        size: dict[str, int] | None = None,
        do_resize: bool = True,
        resample: int = PILImageResampling.BILINEAR,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        **_: Any,  # the processor's other settings (mask sizes, processor class) are unused
    ) -> None:
        """The defaults are ``Sam3ImageProcessor``'s own."""
        if resample != PILImageResampling.BILINEAR:
            raise UnsupportedModelError(
                f"SAM 3 image processor with resample={resample}: only bilinear is supported"
            )
        size = size or {"height": 1008, "width": 1008}
        self.size = (int(size["height"]), int(size["width"]))
        self.do_resize, self.do_rescale, self.do_normalize = do_resize, do_rescale, do_normalize
        self.rescale_factor = rescale_factor
        self.image_mean = list(IMAGENET_STANDARD_MEAN if image_mean is None else image_mean)
        self.image_std = list(IMAGENET_STANDARD_STD if image_std is None else image_std)

    @classmethod
    def from_pretrained(cls, checkpoint: str) -> Sam3TorchImageProcessor:
        """The settings saved with ``checkpoint`` (``preprocessor_config.json``)."""
        settings, _ = ImageProcessingMixin.get_image_processor_dict(checkpoint)
        return cls(**settings)

    def __call__(self, images: Image.Image, return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        """``pixel_values`` (``1 x 3 x height x width``) and ``original_sizes`` of one image."""
        if return_tensors != "pt":
            raise ValueError("only return_tensors='pt' is supported")
        pixels = torch.from_numpy(np.array(images.convert("RGB"))).permute(2, 0, 1)
        original = pixels.shape[-2:]
        pixels = pixels.contiguous()
        if self.do_resize:
            pixels = resize_like_torchvision(pixels, self.size)
        if self.do_rescale and self.do_normalize:
            # Fused as the processor fuses them: mean and std scaled up, one division.
            mean = torch.tensor(self.image_mean) * (1.0 / self.rescale_factor)
            std = torch.tensor(self.image_std) * (1.0 / self.rescale_factor)
            pixels = (pixels.float() - mean[:, None, None]) / std[:, None, None]
        elif self.do_normalize:
            mean, std = torch.tensor(self.image_mean), torch.tensor(self.image_std)
            pixels = (pixels.float() - mean[:, None, None]) / std[:, None, None]
        elif self.do_rescale:
            pixels = pixels * self.rescale_factor
        return {"pixel_values": pixels[None], "original_sizes": torch.tensor([list(original)])}

    def post_process_instance_segmentation(
        self,
        outputs: Sam3ImageSegmentationOutput,
        threshold: float = 0.3,
        mask_threshold: float = 0.5,
        target_sizes: list[tuple[int, int]] | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Scores, boxes and masks of each image's instances scoring above ``threshold``.

        ``target_sizes`` are ``(height, width)``; without them boxes stay relative and masks
        at the model's resolution. Masks are resized one at a time (bilinear resizing treats
        channels apart, so this gives what resizing them together gives) and kept as bool,
        so a large image needs one float mask of memory at a time, not one per instance.
        """
        scores = outputs.pred_logits.sigmoid()
        if outputs.presence_logits is not None:
            scores = scores * outputs.presence_logits.sigmoid()
        boxes = outputs.pred_boxes
        if target_sizes is not None:
            scale = torch.tensor([[w, h, w, h] for h, w in target_sizes], device=boxes.device)
            boxes = boxes * scale[:, None, :]
        results = []
        for index, (kept_scores, kept_boxes, masks) in enumerate(
            zip(scores, boxes, outputs.pred_masks.sigmoid())
        ):
            keep = kept_scores > threshold
            masks = masks[keep]
            if target_sizes is not None and len(masks):
                size = tuple(target_sizes[index])
                binary = torch.stack([binarise(mask, size, mask_threshold) for mask in masks])
            else:
                binary = masks > mask_threshold
            results.append(
                {"scores": kept_scores[keep], "boxes": kept_boxes[keep], "masks": binary}
            )
        return results


def binarise(probabilities: torch.Tensor, size: tuple[int, int], threshold: float) -> torch.Tensor:
    """One mask's probabilities resized bilinearly to ``size``, then thresholded."""
    resized = F.interpolate(probabilities[None, None], size, mode="bilinear", align_corners=False)
    return resized[0, 0] > threshold


def resize_like_torchvision(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A ``3 x H x W`` ``uint8`` image resized as torchvision's ``resize`` does (bilinear,
    antialiased): natively in ``uint8`` on a CPU with AVX2, else through float32, rounded."""
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels
    native = pixels.device.type == "cpu" and "AVX2" in torch.backends.cpu.get_cpu_capability()
    batch = pixels[None] if native else pixels[None].float()
    resized = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
    if not native:
        resized = resized.round_().to(torch.uint8)
    return resized[0]


def load_image_processor(checkpoint: str) -> Any:
    """transformers' ``Sam3ImageProcessor`` where torchvision works, else the torch twin."""
    if torchvision_works():
        return AutoImageProcessor.from_pretrained(checkpoint)
    return Sam3TorchImageProcessor.from_pretrained(checkpoint)


@register_backend(
    "sam3",
    tasks=[Task.LOCATE],
    # facebook/sam3 is saved as the video model, whose image detector Sam3Model loads.
    model_types=("sam3", "sam3_video", "sam3_lite_text"),
    capabilities=[
        Capability.RANKED_CANDIDATES,
        Capability.QUERIES_BATCHED,
        Capability.IMAGE_ENCODED_ONCE,
        Capability.MASKS,
    ],
    # The threshold of the model cards' and transformers' examples.
    settings=ModelSettings(default_threshold=0.5),
    models=[
        Model(
            "sam3",
            "facebook/sam3",
            "SAM 3 (0.84B; gated: accept the licence on the hub); every instance of a noun "
            "phrase, with masks and a presence score",
        ),
        Model(
            "sam3-lite",
            "yonigozlan/sam3-litetext-s0",
            "SAM3-LiteText S0: SAM 3's image model with a distilled MobileCLIP-S0 text "
            "encoder; ungated",
        ),
    ],
)
class Sam3Backend(Backend):
    def __init__(
        self,
        model: Sam3Model | Sam3LiteTextModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any,
        checkpoint: str | None = None,
        query_batch_size: int | None = None,
    ) -> None:
        """``image_processor``: transformers' ``Sam3ImageProcessor`` or a
        :class:`Sam3TorchImageProcessor`; ``query_batch_size``: queries per forward pass
        (default: 1 on CPU, 8 elsewhere)."""
        super().__init__(model, checkpoint)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.query_batch_size = query_batch_size or (1 if self.device.type == "cpu" else 8)

    @classmethod
    def from_pretrained(
        cls, checkpoint: str, device: torch.device, dtype: torch.dtype, **options: Any
    ) -> Sam3Backend:
        """``options`` are those of ``__init__`` (``query_batch_size``)."""
        with gated_hint():
            config = from_pretrained(AutoConfig.from_pretrained, checkpoint)
            # facebook/sam3 is saved as the video model; its image detector is what answers.
            detector = getattr(config, "detector_config", None) or config
            lite = detector.model_type == "sam3_lite_text"
            model_class = Sam3LiteTextModel if lite else Sam3Model
            model = from_pretrained(model_class.from_pretrained, checkpoint, config=detector)
            tokenizer = from_pretrained(AutoTokenizer.from_pretrained, checkpoint)
            image_processor = from_pretrained(load_image_processor, checkpoint)
        model = model.to(device=device, dtype=dtype)
        return cls(model, tokenizer, image_processor, checkpoint, **options)

    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        # SAM 3 reads a phrase of at most TEXT_LENGTH tokens, start and end included.
        warn_if_truncated(self.tokenizer, queries, TEXT_LENGTH, "SAM 3")
        pixels = self.image_processor(images=image, return_tensors="pt")["pixel_values"]
        vision = self.model.get_vision_features(
            pixel_values=pixels.to(device=self.device, dtype=self.dtype)
        )
        found: list[Candidates] = []
        step = self.query_batch_size
        for start in range(0, len(queries), step):
            found += self._predict_batch(image, queries[start : start + step], vision, threshold)
        return found

    def _predict_batch(
        self,
        image: Image.Image,
        queries: list[str],
        vision: Sam3VisionEncoderOutput,
        threshold: float,
    ) -> list[Candidates]:
        """One forward pass for ``queries``, over the image features computed once."""
        text = self.tokenizer(
            queries,
            padding="max_length",
            max_length=TEXT_LENGTH,
            truncation=True,
            return_tensors="pt",
        )
        outputs = self.model(
            vision_embeds=expand(vision, len(queries)), **to_model(text, self.device, self.dtype)
        )
        # Post-processed in float32 whatever the model runs in, as a full-precision run would.
        scored = Sam3ImageSegmentationOutput(
            pred_logits=outputs.pred_logits.float(),
            pred_boxes=outputs.pred_boxes.float(),
            pred_masks=outputs.pred_masks.float(),
            presence_logits=outputs.presence_logits.float(),
        )
        results = self.image_processor.post_process_instance_segmentation(
            scored,
            threshold=threshold,
            mask_threshold=MASK_THRESHOLD,
            target_sizes=[(image.height, image.width)] * len(queries),
        )
        nothing = np.zeros((0, image.height, image.width), dtype=bool)  # of the image's size
        return [
            Candidates.of(
                r["boxes"], r["scores"], query, r["masks"] if len(r["masks"]) else nothing
            )
            for query, r in zip(queries, results)
        ]


def expand(vision: Sam3VisionEncoderOutput, batch: int) -> Sam3VisionEncoderOutput:
    """The one image's features as a batch of ``batch`` rows, without copying them."""
    if batch == 1:
        return vision
    return type(vision)(
        last_hidden_state=vision.last_hidden_state.expand(
            batch, *vision.last_hidden_state.shape[1:]
        ),
        fpn_hidden_states=tuple(f.expand(batch, *f.shape[1:]) for f in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(
            p.expand(batch, *p.shape[1:]) for p in vision.fpn_position_encoding
        ),
    )


@contextmanager
def gated_hint() -> Iterator[None]:
    """Add to a "cannot load" error how to get SAM 3's gated weights."""
    try:
        yield
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"{exc}; {GATED_HINT}") from None
