"""Kosmos-2: phrase grounding and region descriptions through its grounding tokens.

Kosmos-2 names a region by two patch-index tokens of a 32 x 32 grid over the image (the
patches of its upper-left and lower-right corners) between ``<object>`` and ``</object>``;
the processor turns boxes into those tokens (``bboxes=``) and generated tokens back into
boxes normalised to the whole image (it resizes the image without cropping), which are
scaled here to the original image's pixels.

**Locate.** The query is asked as the model card's phrase grounding prompt,
``<grounding><phrase> {query}</phrase>``: the model goes on with the phrase's box (or boxes,
joined by a delimiter). Its boxes are those the processor's post-processing gives the
query's phrase; generation stops at the first ``</object>``, where that answer is complete
(the tokens before it are what the model card's longer generation writes). A box is scored
by the geometric mean of the probabilities of its two patch-index tokens: how sure the model
was of where the box is, in ``[0, 1]``. Whether the phrase is there at all the model says by
writing a box or not, so every box it writes is kept (``default_threshold`` is 0).

**Describe.** A region is asked as the model card's referring-expression generation prompt,
``<grounding><phrase> It</phrase><object>...</object> is``. The caption is what the model
writes after the prompt, cleaned by the processor's post-processing (tags removed) and
without the prompt's own words: "It is a snowman" reads "a snowman". Its score is the mean
log-probability of the generated tokens (end and padding left out).

Decoding is greedy, as in the model card. The vision tower and the latent-query projection
run once per call; their image embeddings are handed to every prompt's ``generate`` (the
processor, which lays out each prompt's image tokens, still resizes the image per prompt, a
small cost beside the vision tower).
Prompts of the same token length (every box of a call; queries of equal length) go through
one ``generate``: Kosmos-2 counts positions from the first non-padding token only when the
prompt is read, so a padded prompt would see its answer's positions shifted.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, Kosmos2ForConditionalGeneration, Kosmos2Processor

from sceneloc.backends.base import Backend, Caption, from_pretrained
from sceneloc.backends.generation import mean_log_prob, token_log_probs
from sceneloc.candidates import Candidates
from sceneloc.registry import Capability, Model, ModelSettings, Task, register_backend

logger = logging.getLogger(__name__)

GROUNDING_PROMPT = "<grounding><phrase> {query}</phrase>"
#: The region is inserted after the phrase by the processor (``bboxes=``).
DESCRIBE_PROMPT = "<grounding><phrase> It</phrase> is"
#: The longest answer of the model card's examples.
MAX_NEW_TOKENS = 128


@register_backend(
    "kosmos-2",
    tasks=[Task.LOCATE, Task.DESCRIBE],
    model_types=("kosmos-2",),
    capabilities=[Capability.QUERIES_BATCHED, Capability.IMAGE_ENCODED_ONCE],
    settings=ModelSettings(default_threshold=0.0, num_beams=1, max_new_tokens=MAX_NEW_TOKENS),
    models=[
        Model(
            "kosmos-2",
            "microsoft/kosmos-2-patch14-224",
            "Kosmos-2 (1.7B); grounds a phrase, describes regions",
        ),
    ],
)
class Kosmos2Backend(Backend):
    def __init__(
        self,
        model: Kosmos2ForConditionalGeneration,
        processor: Kosmos2Processor,
        checkpoint: str | None = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
    ) -> None:
        """``max_new_tokens`` caps a grounding answer (locate), so a model that never closes
        its box still stops; describe takes its own per call."""
        super().__init__(model, checkpoint)
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        tokenizer = processor.tokenizer
        self.patch_ids = set(
            tokenizer.convert_tokens_to_ids(
                [f"<patch_index_{i:04d}>" for i in range(processor.num_patch_index_tokens)]
            )
        )
        self.object_end_id = tokenizer.convert_tokens_to_ids(processor.eoo_token)
        #: Tokens that mark an answer's start and end, or pad it: no words of a caption.
        self.markers = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
        #: What the description prompt itself reads as, once cleaned: "It is".
        self.prompt_words = processor.post_process_generation(DESCRIBE_PROMPT)[0]

    @classmethod
    def from_pretrained(
        cls, checkpoint: str, device: torch.device, dtype: torch.dtype, **options: Any
    ) -> Kosmos2Backend:
        """``options`` are those of ``__init__`` (``max_new_tokens``)."""
        processor = from_pretrained(AutoProcessor.from_pretrained, checkpoint)
        model = from_pretrained(Kosmos2ForConditionalGeneration.from_pretrained, checkpoint)
        return cls(model.to(device=device, dtype=dtype), processor, checkpoint, **options)

    # --- locate -------------------------------------------------------------------------------

    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        prompts = [(GROUNDING_PROMPT.format(query=q.strip()), None) for q in queries]
        answers = self._generate(
            image,
            prompts,
            max_new_tokens=self.max_new_tokens,
            num_beams=1,
            eos_token_id=[self.processor.tokenizer.eos_token_id, self.object_end_id],
        )
        return [
            self._candidates(query, sequence, log_probs, image.size)
            for query, (sequence, log_probs) in zip(queries, answers)
        ]

    def _candidates(
        self, query: str, sequence: list[int], log_probs: list[float], size: tuple[int, int]
    ) -> Candidates:
        """The boxes the processor reads for the query's phrase, the one the prompt opens
        with, each scored by its two patch-index tokens (the first ones generated)."""
        _, entities = self._post_process(sequence)
        boxes = next((found for _, (start, _), found in entities if start == 0), [])
        generated = sequence[len(sequence) - len(log_probs) :]
        patches = [p for t, p in zip(generated, log_probs) if t in self.patch_ids]
        if len(patches) < 2 * len(boxes):
            # A patch index spelt out of ordinary tokens: no token probabilities to score it with.
            logger.warning("the boxes of %r are not all patch-index tokens; scored 0", query)
            scores = [0.0] * len(boxes)
        else:
            scores = [
                math.exp((patches[2 * i] + patches[2 * i + 1]) / 2) for i in range(len(boxes))
            ]
        return Candidates.of(self._to_pixels(boxes, size), scores, query)

    # --- describe -----------------------------------------------------------------------------

    def describe(
        self,
        image: Image.Image,
        boxes: np.ndarray | None,
        *,
        max_new_tokens: int,
        num_beams: int,
    ) -> list[Caption]:
        width, height = image.size
        prompts = [
            (DESCRIBE_PROMPT, [tuple(float(v) for v in box / [width, height, width, height])])
            for box in boxes
        ]
        answers = self._generate(image, prompts, max_new_tokens=max_new_tokens, num_beams=num_beams)
        captions = []
        for box, (sequence, log_probs) in zip(boxes, answers):
            text, _ = self._post_process(sequence)
            caption = text.removeprefix(self.prompt_words).strip()
            score = mean_log_prob(sequence, log_probs, self.markers)
            captions.append(Caption([float(v) for v in box], caption, score))
        return captions

    # --- the model ----------------------------------------------------------------------------

    def _generate(
        self,
        image: Image.Image,
        prompts: list[tuple[str, list[tuple[float, ...]] | None]],
        **generation: Any,
    ) -> list[tuple[list[int], list[float]]]:
        """Each prompt's sequence (prompt and answer) and the log-probability of each answer
        token; ``prompts`` are texts and their normalised boxes, as the processor takes them.

        The image embeddings are computed once; prompts of one token length share a batch.
        """
        inputs = [self.processor(text=text, images=image, bboxes=boxes) for text, boxes in prompts]
        pixels = torch.tensor(np.asarray(inputs[0]["pixel_values"]))
        image_embeds = self.model.get_image_features(
            pixel_values=pixels.to(device=self.device, dtype=self.dtype)
        ).pooler_output
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, encoded in enumerate(inputs):
            by_length[len(encoded["input_ids"])].append(index)
        answers: dict[int, tuple[list[int], list[float]]] = {}
        for indices in by_length.values():
            batch = {
                key: torch.tensor([inputs[i][key] for i in indices], device=self.device)
                for key in ("input_ids", "attention_mask", "image_embeds_position_mask")
            }
            output = self.model.generate(
                **batch,
                image_embeds=image_embeds.repeat(len(indices), 1, 1),
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                **generation,
            )
            log_probs = token_log_probs(self.model, output)
            for i, sequence, scores in zip(indices, output.sequences, log_probs):
                answers[i] = (sequence.tolist(), scores.tolist())
        return [answers[i] for i in range(len(prompts))]

    def _post_process(self, sequence: list[int]) -> tuple[str, list]:
        """The processor's cleaned text of a sequence and its entities ``(phrase, span,
        normalised boxes)``, as the model card reads a generated sequence."""
        text = self.processor.decode(sequence, skip_special_tokens=True)
        return self.processor.post_process_generation(text, cleanup_and_extract=True)

    @staticmethod
    def _to_pixels(boxes: list[tuple[float, ...]], size: tuple[int, int]) -> np.ndarray:
        width, height = size
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * [width, height, width, height]
