"""Qwen3-VL (and Qwen2.5-VL): a vision-language model that reads the whole sentence.

**Answering.** Each query is asked with the referring-expression prompt of the Qwen3-VL
report, through the checkpoint's chat template, and answered by greedy decoding. The model
writes JSON, ``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]``, often fenced and sometimes
followed by prose; :func:`parse_boxes` reads it tolerantly (every complete box it finds, none
for an empty list or an answer without one). Qwen3-VL writes coordinates relative to 0-1000,
Qwen2.5-VL pixels of the resized image it was shown; either is clamped to that range and
mapped to the original image's pixels. An answer with no box is the model saying "not there".

**Scoring.** Qwen's tokenizer writes numbers digit by digit, so the probability of the
generated coordinates says little (a confident "3" in "312" and "398" is the same token),
and the model has no score of its own. Each box is scored instead by asking the model about
it: "Does the region {"bbox_2d": [...]} of the image show "<query>"? Answer yes or no.", and
reading, from one forward pass without generation, ``P(yes) / (P(yes) + P(no))``, summed
over the spellings of each word. That is a probability that the box is what the query
describes, comparable across queries and images, so a threshold means the same everywhere;
a teacher-forced likelihood of the box would instead measure how sure the model was of the
exact digits. The box is given in the model's own coordinates, so the verifier reads it the
way the model writes boxes, and the image is not redrawn (its encoding is shared).

**Choosing.** :meth:`QwenVLBackend.choose` serves the propose-and-choose pipelines: numbered
candidate boxes from a proposer are listed in the prompt, in the model's coordinates, and the
model is asked which one the whole query refers to. The candidates are listed rather than
drawn on the image because drawing hides what is under the marks and would mean encoding a
new image, while the listed boxes reuse the one encoding, and Qwen reads boxes in this form.
The choice and its probability come from one forward pass: a softmax over the logits of the
candidates' numbers and of "none".

**Describing.** A region is named in the prompt by its ``bbox_2d`` in the model's own
coordinates, the form Qwen writes and reads boxes in: "Describe the region {"bbox_2d": [...]}
of the image in a short phrase that singles it out." The answer, by greedy decoding, is the
caption; its score is the mean log-probability of its tokens (special tokens, which end the
answer, left out). Every box of a call is described in one ``generate`` over the one encoding.

**Several queries.** The image is preprocessed and run through the vision tower once per
call; its features (and Qwen3-VL's deepstack features) are handed to every prompt as
precomputed encoder outputs. All queries go through one ``generate``, padded on the left,
where the attention mask hides the padding and the multimodal rotary positions are counted
from each prompt's first real token, so each query gets what it gets when asked alone (up to
float rounding, which differs with the batch size). All boxes are verified in one forward pass.

**Image budget.** ``max_pixels`` caps the pixels the image is resized to (the image processor's
``size["longest_edge"]``): the visual tokens, and so the cost, grow with it. Checkpoints allow
far more than a CPU can afford, so the default depends on the device.

Without torchvision, the processor is put together from the PIL image processor
(``Qwen2VLImageProcessorPil``), the tokenizer and the chat template, with no video processor
(:func:`without_video`).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessorPil,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)
from transformers.generation.utils import GenerateOutput
from transformers.utils import ModelOutput

from sceneloc.backends.base import Backend, Caption, from_pretrained, to_model
from sceneloc.backends.generation import mean_log_prob, token_log_probs
from sceneloc.candidates import Candidates
from sceneloc.errors import SceneLocError, UnsupportedModelError
from sceneloc.registry import (
    Capability,
    Model,
    ModelSettings,
    Task,
    register_backend,
)

logger = logging.getLogger(__name__)

#: The referring-expression prompt of the Qwen3-VL report (appendix B.5).
GROUNDING_PROMPT = (
    'Locate every object that matches the description "{query}" in the image. '
    "Report bbox coordinates in JSON format."
)
VERIFY_PROMPT = (
    'Does the region {{"bbox_2d": {box}}} of the image show "{query}"? Answer yes or no.'
)
DESCRIBE_PROMPT = (
    'Describe the region {{"bbox_2d": {box}}} of the image in a short phrase that singles it out.'
)
CHOICE_PROMPT = (
    "The image has these numbered candidate boxes:\n{listing}\n"
    'Which one is "{query}"? Answer with its number only, or "none" if no candidate is.'
)
YES, NO, NONE = ("Yes", "yes"), ("No", "no"), ("none", "None")
#: Candidates offered to :meth:`QwenVLBackend.choose`: their numbers are one token each.
MAX_CHOICES = 9
#: Pixels an image is resized to at most when the user sets no budget: what a CPU answers in
#: seconds, and on an accelerator about a 1280 x 720 photograph at its own size.
DEFAULT_MAX_PIXELS = {"cpu": 512 * 512, "accelerator": 1024 * 1024}
#: Where a JSON value may start in an answer.
JSON_START = re.compile(r"[\[{]")


def without_video(processor_class: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """``processor_class`` for images and text only, all its behaviour inherited.

    transformers requires a Qwen-VL processor to hold a video processor, and Qwen's video
    processors need torchvision; a processor declaring no video slot needs neither.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        processor_class.__init__(
            self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs
        )

    return type(
        f"{processor_class.__name__}WithoutVideo", (processor_class,), {"__init__": __init__}
    )


@dataclass(frozen=True)
class Flavour:
    """What differs between the Qwen-VL generations this backend serves."""

    model_class: type[PreTrainedModel]
    processor_class: type[ProcessorMixin]
    #: Whether boxes are written relative to 0-1000 (else in pixels of the resized image).
    relative_coordinates: bool


FLAVOURS = {
    "qwen3_vl": Flavour(Qwen3VLForConditionalGeneration, without_video(Qwen3VLProcessor), True),
    "qwen2_5_vl": Flavour(
        Qwen2_5_VLForConditionalGeneration, without_video(Qwen2_5_VLProcessor), False
    ),
}


@dataclass(frozen=True)
class BoxSpace:
    """How the model writes boxes of one image: its coordinate range and the image's size."""

    #: The largest coordinate the model writes along x and y.
    extent: tuple[float, float]
    #: The original image's width and height.
    size: tuple[int, int]

    def to_model(self, boxes: np.ndarray) -> list[list[int]]:
        """Pixel boxes of the original image in the model's coordinates, as it writes them."""
        extent = np.array(self.extent * 2)
        model_per_pixel = extent / np.array(self.size * 2)
        return np.clip(np.round(boxes * model_per_pixel), 0, extent).astype(int).tolist()

    def to_pixels(self, boxes: list[list[float]]) -> np.ndarray:
        """Model boxes in pixels of the original image."""
        pixels_per_model = np.array(self.size * 2) / np.array(self.extent * 2)
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * pixels_per_model

    def clamp(self, box: list[float]) -> list[float]:
        """A box the model wrote, corners ordered and cut to the range it writes in."""
        x1, x2 = sorted((box[0], box[2]))
        y1, y2 = sorted((box[1], box[3]))
        return [min(max(v, 0.0), limit) for v, limit in zip((x1, y1, x2, y2), self.extent * 2)]


@dataclass(frozen=True)
class EncodedImage(BoxSpace):
    """An image as the model sees it: its visual features, computed once, and its box space."""

    #: The processor's ``image_grid_thw`` (one row).
    grid: torch.Tensor
    #: What ``get_image_features`` returned.
    features: ModelOutput
    #: The image's placeholder tokens in a prompt.
    placeholder: str

    def features_for(self, prompts: int) -> dict[str, ModelOutput]:
        """The precomputed encoder outputs for a batch of ``prompts`` prompts of this image."""
        features = self.features
        repeated = {"pooler_output": list(features.pooler_output) * prompts}
        if getattr(features, "deepstack_features", None) is not None:
            repeated["deepstack_features"] = [
                list(layer) * prompts for layer in features.deepstack_features
            ]
        return {"image": type(features)(**{**features, **repeated})}


@register_backend(
    "qwen3-vl",
    tasks=[Task.LOCATE, Task.DESCRIBE],
    model_types=tuple(FLAVOURS),
    capabilities=[
        Capability.RANKED_CANDIDATES,
        Capability.QUERIES_BATCHED,
        Capability.IMAGE_ENCODED_ONCE,
    ],
    # A box is kept when the model says yes more than no; describe decodes greedily, with the
    # answer length of the model card's examples.
    settings=ModelSettings(
        default_threshold=0.5, half_precision=True, num_beams=1, max_new_tokens=128
    ),
    models=[
        Model(
            f"qwen3-vl-{size}",
            f"Qwen/Qwen3-VL-{size.upper()}-Instruct",
            f"Qwen3-VL {size.upper()} Instruct; {about}",
        )
        for size, about in (
            ("2b", "reads whole sentences (relations, actions), smallest"),
            ("4b", "reads whole sentences, close to 8B's referring accuracy"),
            ("8b", "reads whole sentences, the most accurate here; a GPU model"),
        )
    ],
)
class QwenVLBackend(Backend):
    def __init__(
        self,
        model: Qwen3VLForConditionalGeneration | Qwen2_5_VLForConditionalGeneration,
        processor: Qwen3VLProcessor | Qwen2_5_VLProcessor,
        checkpoint: str | None = None,
        max_pixels: int | None = None,
        max_new_tokens: int = 256,
    ) -> None:
        """``max_pixels`` is the image budget (default: by device, see the module docstring);
        ``max_new_tokens`` caps a grounding answer, so a model that never ends it still stops
        (describe takes its own per call)."""
        super().__init__(model, checkpoint)
        self.model = model.eval()
        self.processor = processor
        self.flavour = flavour_of(model.config.model_type)
        self.max_new_tokens = max_new_tokens
        if max_pixels is None:
            max_pixels = DEFAULT_MAX_PIXELS["cpu" if self.device.type == "cpu" else "accelerator"]
        self.max_pixels = self._checked_budget(max_pixels)
        self.yes_ids, self.no_ids, self.none_ids = (self._first_tokens(w) for w in (YES, NO, NONE))
        self.number_ids = [self._first_tokens([str(n)]) for n in range(1, MAX_CHOICES + 1)]

    @classmethod
    def from_pretrained(
        cls, checkpoint: str, device: torch.device, dtype: torch.dtype, **options: Any
    ) -> QwenVLBackend:
        """``options`` are those of ``__init__`` (``max_pixels``, ``max_new_tokens``)."""
        flavour, processor = load_processor(checkpoint)
        model = from_pretrained(flavour.model_class.from_pretrained, checkpoint, dtype=dtype)
        return cls(model.to(device), processor, checkpoint, **options)

    # --- answering ----------------------------------------------------------------------------

    def predict(
        self,
        image: Image.Image,
        queries: list[str],
        threshold: float,
        max_pixels: int | None = None,
    ) -> list[Candidates]:
        """Each query's boxes, each scored by the model's yes/no verification.

        ``max_pixels`` overrides the backend's image budget for this call.
        """
        encoded = self.encode_image(image, max_pixels)
        answers = self.generate(encoded, [GROUNDING_PROMPT.format(query=q) for q in queries])
        boxes = [[encoded.clamp(box) for box in parse_boxes(answer)] for answer in answers]
        scores = iter(
            self.verify(encoded, [(q, box) for q, found in zip(queries, boxes) for box in found])
        )
        return [
            Candidates.of(encoded.to_pixels(found), [next(scores) for _ in found], query)
            for query, found in zip(queries, boxes)
        ]

    def encode_image(self, image: Image.Image, max_pixels: int | None = None) -> EncodedImage:
        """Resize ``image`` to the budget and run the vision tower on it, once."""
        budget = self._checked_budget(self.max_pixels if max_pixels is None else max_pixels)
        pixels = image_inputs(self.processor, [image], budget)
        grid = pixels["image_grid_thw"].to(self.device)
        features = self.model.get_image_features(
            pixel_values=pixels["pixel_values"].to(device=self.device, dtype=self.dtype),
            image_grid_thw=grid,
            return_dict=True,
        )
        return EncodedImage(
            grid=grid,
            features=features,
            placeholder=self.processor.replace_image_token(pixels, 0),
            extent=box_extent(self.flavour, self.processor, grid[0]),
            size=image.size,
        )

    def generate(self, encoded: EncodedImage, prompts: list[str]) -> list[str]:
        """The model's greedy answer to each prompt about the encoded image, in one batch."""
        answers, _ = self._answers(encoded, prompts, self.max_new_tokens, num_beams=1)
        return self.processor.batch_decode(answers, skip_special_tokens=True)

    def describe(
        self,
        image: Image.Image,
        boxes: np.ndarray | None,
        *,
        max_new_tokens: int,
        num_beams: int,
    ) -> list[Caption]:
        encoded = self.encode_image(image)
        prompts = [DESCRIBE_PROMPT.format(box=box) for box in encoded.to_model(boxes)]
        answers, output = self._answers(encoded, prompts, max_new_tokens, num_beams)
        captions = self.processor.batch_decode(answers, skip_special_tokens=True)
        log_probs = token_log_probs(self.model, output).tolist()
        special = set(self.processor.tokenizer.all_special_ids)
        return [
            Caption([float(v) for v in box], caption.strip(), mean_log_prob(ids, scores, special))
            for box, caption, ids, scores in zip(boxes, captions, answers.tolist(), log_probs)
        ]

    def _answers(
        self, encoded: EncodedImage, prompts: list[str], max_new_tokens: int, num_beams: int
    ) -> tuple[torch.Tensor, GenerateOutput]:
        """Each prompt's answer tokens (prompts x longest answer, padded), and what
        ``generate`` returned, with its per-step scores."""
        inputs = self.inputs(encoded, prompts)
        output = self.model.generate(
            **inputs,
            # beam search runs each prompt num_beams times over; the image is the same for all
            mm_encoder_outputs=encoded.features_for(len(prompts) * num_beams),
            do_sample=False,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            output_scores=True,
            return_dict_in_generate=True,
        )
        return output.sequences[:, inputs["input_ids"].shape[1] :], output

    def verify(self, encoded: EncodedImage, pairs: list[tuple[str, list[float]]]) -> list[float]:
        """``P(yes) / (P(yes) + P(no))`` that each box shows its query, in one forward pass."""
        if not pairs:
            return []
        prompts = [
            VERIFY_PROMPT.format(query=query, box=[round(v) for v in box]) for query, box in pairs
        ]
        logits = self.next_token_logits(encoded, prompts)
        yes = logits[:, self.yes_ids].logsumexp(-1)
        no = logits[:, self.no_ids].logsumexp(-1)
        return torch.sigmoid(yes - no).tolist()

    # --- choosing -----------------------------------------------------------------------------

    @torch.inference_mode()
    def choose(
        self,
        image: Image.Image,
        query: str,
        candidates: Candidates,
        max_pixels: int | None = None,
    ) -> tuple[int | None, float]:
        """Which of ``candidates`` the whole ``query`` refers to, and the model's probability.

        The candidates are numbered in their order; past :data:`MAX_CHOICES`, only the best
        scored are offered. Returns the index into ``candidates`` (``None`` when the model
        says none is) and the probability of that answer among the offered numbers and "none".
        With no candidates there is nothing to choose: ``(None, 1.0)``. Runs without autograd,
        as the pipelines call it outside ``Grounder.locate``.
        """
        if not len(candidates):
            return None, 1.0
        offered = np.sort(np.argsort(-candidates.scores, kind="stable")[:MAX_CHOICES])
        encoded = self.encode_image(image, max_pixels)
        listing = "\n".join(
            f'{n}. {{"bbox_2d": {box}}}'
            for n, box in enumerate(encoded.to_model(candidates.boxes[offered]), start=1)
        )
        (logits,) = self.next_token_logits(
            encoded, [CHOICE_PROMPT.format(listing=listing, query=query)]
        )
        answers = [*self.number_ids[: len(offered)], self.none_ids]
        probabilities = torch.stack([logits[ids].logsumexp(-1) for ids in answers]).softmax(-1)
        best = int(probabilities.argmax())
        chosen = None if best == len(offered) else int(offered[best])
        return chosen, float(probabilities[best])

    # --- the model's inputs -------------------------------------------------------------------

    def chat_prompt(self, prompt: str) -> str:
        """One user turn, the image then ``prompt``, through the checkpoint's chat template."""
        return chat_prompt(self.processor, prompt)

    def inputs(self, encoded: EncodedImage, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Token inputs for ``prompts`` about the encoded image, as the processor builds them
        (placeholders expanded, modality types marked), padded on the left."""
        texts, _ = self.processor.get_text_with_replacements(
            [self.chat_prompt(p) for p in prompts], [encoded.placeholder] * len(prompts)
        )
        text = self.processor.tokenizer(
            texts, padding=True, padding_side="left", return_tensors="pt"
        )
        types = torch.tensor(self.processor.create_mm_token_type_ids(text["input_ids"]))
        return {
            **to_model(text, self.device, self.dtype),
            "mm_token_type_ids": types.to(self.device),
            "image_grid_thw": encoded.grid.expand(len(prompts), -1),
        }

    def next_token_logits(self, encoded: EncodedImage, prompts: list[str]) -> torch.Tensor:
        """The logits of each prompt's first answer token (prompts x vocabulary), float32."""
        output = self.model(
            **self.inputs(encoded, prompts),
            mm_encoder_outputs=encoded.features_for(len(prompts)),
            logits_to_keep=1,
        )
        return output.logits[:, -1].float()

    def _first_tokens(self, words: tuple[str, ...] | list[str]) -> list[int]:
        """The first token of each spelling of an answer word (deduplicated)."""
        tokenizer = self.processor.tokenizer
        return sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in words})

    def _checked_budget(self, max_pixels: int) -> int:
        unit = self.processor.image_processor.patch_size * self.processor.image_processor.merge_size
        if max_pixels < unit * unit:
            raise SceneLocError(
                f"max_pixels must be at least {unit * unit} (one {unit} x {unit} visual token), "
                f"got {max_pixels}"
            )
        return int(max_pixels)


def flavour_of(model_type: str | None) -> Flavour:
    try:
        return FLAVOURS[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"a {model_type} checkpoint is not a Qwen-VL model ({', '.join(FLAVOURS)})"
        ) from None


def load_processor(checkpoint: str) -> tuple[Flavour, ProcessorMixin]:
    """The checkpoint's flavour and its processor, put together without torchvision."""
    flavour = flavour_of(from_pretrained(AutoConfig.from_pretrained, checkpoint).model_type)
    image_processor = from_pretrained(Qwen2VLImageProcessorPil.from_pretrained, checkpoint)
    tokenizer = from_pretrained(AutoTokenizer.from_pretrained, checkpoint)
    settings, _ = from_pretrained(flavour.processor_class.get_processor_dict, checkpoint)
    processor = flavour.processor_class.from_args_and_dict([image_processor, tokenizer], settings)
    return flavour, processor


def chat_prompt(processor: ProcessorMixin, prompt: str) -> str:
    """One user turn, the image then ``prompt``, through the checkpoint's chat template."""
    message = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
    return processor.apply_chat_template([message], tokenize=False, add_generation_prompt=True)


def image_inputs(
    processor: ProcessorMixin, images: list[Image.Image], budget: int
) -> dict[str, torch.Tensor]:
    """The image processor's ``pixel_values`` and ``image_grid_thw`` for ``images``, each
    resized to at most ``budget`` pixels (the checkpoint's own floor kept below it)."""
    image_processor = processor.image_processor
    size = {"shortest_edge": min(image_processor.size["shortest_edge"], budget)}
    return image_processor(
        images=images, size={**size, "longest_edge": budget}, return_tensors="pt"
    )


def box_extent(
    flavour: Flavour, processor: ProcessorMixin, grid: torch.Tensor
) -> tuple[float, float]:
    """The largest coordinate the model writes along x and y for an image of ``grid`` (its
    ``image_grid_thw`` row): 1000 where boxes are relative, else the resized image's pixels."""
    if flavour.relative_coordinates:
        return 1000.0, 1000.0
    patch = processor.image_processor.patch_size  # the grid counts patches
    return float(grid[2] * patch), float(grid[1] * patch)


def parse_boxes(answer: str) -> list[list[float]]:
    """Every complete box in an answer, in order; none for ``[]`` or an answer without one.

    Reads each JSON value in the text (so code fences, prose around it and a second block are
    no obstacle, and a cut-off answer keeps its complete boxes): objects with a ``bbox_2d``
    (or ``bbox``) of four numbers, bare ``[x1, y1, x2, y2]`` lists, and lists of either.
    """
    decoder = json.JSONDecoder()
    boxes: list[list[float]] = []
    position = 0
    while (start := JSON_START.search(answer, position)) is not None:
        try:
            value, position = decoder.raw_decode(answer, start.start())
        except json.JSONDecodeError:
            position = start.start() + 1
            continue
        boxes += _boxes_in(value)
    return boxes


def _boxes_in(value: Any) -> list[list[float]]:
    if _is_box(value):
        return [[float(v) for v in value]]
    if isinstance(value, dict):
        box = value.get("bbox_2d", value.get("bbox"))
        return [[float(v) for v in box]] if _is_box(box) else []
    if isinstance(value, list):
        return [box for item in value for box in _boxes_in(item)]
    return []


def _is_box(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(np.isfinite(value))
    )
