"""Florence-2: phrase grounding, region descriptions and dense region captions, by generation.

**Locate** (``<CAPTION_TO_PHRASE_GROUNDING>``). The model writes
``phrase<loc_x1><loc_y1><loc_x2><loc_y2>...`` for the phrases of the query it can find; the
processor's own post-processing turns that text into pixel boxes. Florence-2 gives no box
scores, so each box is scored here by the geometric mean of the probabilities of the four
location tokens that produced it (from the beam search's per-token scores): how sure the
model was of where the box is, in ``[0, 1]``. Whether something is there at all the model
decides by writing a box or not, so by default every box it writes is kept
(``default_threshold`` is 0) and the score ranks them.

**Describe a given region** (``<REGION_TO_DESCRIPTION>``). The box goes into the prompt as
the processor's 1000-bin location tokens of the original image (its own quantisation); the
answer is plain text, read by the processor's post-processing. Its score is the mean
log-probability of the answer's tokens (start, end and padding left out).

**Dense captions** (``<DENSE_REGION_CAPTION>``, no boxes given). The model writes
``words<loc_..>x4`` per region; the processor's post-processing gives the boxes, in pixels of
the original image, and their words. A region's score is the mean log-probability of its own
tokens: its four location tokens and the words just before their run (a phrase written with
several boxes gives its words to each).

Decoding is the beam search of the reference usage (three beams, no sampling), so it is
deterministic. All prompts of a call (one per query, or one per box) go through one
``generate``: the image is preprocessed and run through the vision tower once, its features
shared by every prompt. The prompts are padded on the right, where the attention mask hides
the padding and the learned positions of the real tokens do not move, so each query or box
gets what it gets when asked alone (up to float rounding, which differs with the batch size).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, Florence2ForConditionalGeneration, Florence2Processor
from transformers.modeling_outputs import BaseModelOutput

from sceneloc.backends.base import Backend, Caption, from_pretrained
from sceneloc.backends.generation import mean_log_prob, token_log_probs
from sceneloc.candidates import Candidates
from sceneloc.registry import Capability, Model, ModelSettings, Task, register_backend

logger = logging.getLogger(__name__)

GROUNDING = "<CAPTION_TO_PHRASE_GROUNDING>"
REGION_TO_DESCRIPTION = "<REGION_TO_DESCRIPTION>"
DENSE_REGION_CAPTION = "<DENSE_REGION_CAPTION>"
#: Beams and longest answer of the reference Florence-2 usage (the examples of the model cards).
NUM_BEAMS = 3
MAX_NEW_TOKENS = 1024
#: How the processor's parser recognises a location token in the decoded answer.
LOCATION_TAG = re.compile(r"<loc_\d+>")
#: The size on which a box's coordinates read back as the numbers of its location tags.
BINS = (1000, 1000)

#: A parsed box, its words, and where its four location tokens are among the generated
#: tokens (``None`` where a tag was spelt out of ordinary tokens and has no probability).
Region = tuple[list[float], str, list[int] | None]


def prompt_for(processor: Florence2Processor, task: str, text: str = "") -> str:
    """The encoder input the processor builds for ``task`` (with its input ``text``, if the
    task takes one) and one image: what the model reads, in inference and in fine-tuning."""
    templates = {**processor.task_prompts_without_inputs, **processor.task_prompts_with_input}
    image_tokens = processor.image_token * processor.num_image_tokens
    tokenizer = processor.tokenizer
    prompt = templates[task].format(input=text.strip())
    return f"{image_tokens}{tokenizer.bos_token}{prompt}{tokenizer.eos_token}"


def region_text(
    processor: Florence2Processor, box: np.ndarray | list[float], size: tuple[int, int]
) -> str:
    """A pixel box of an image of ``size`` as the model reads and writes it: four location
    tags, by the processor's own quantisation (1000 bins a side)."""
    # float64, as the regions sceneloc passes are: float32 may floor a value at a bin's edge
    # into the bin below.
    locations = torch.tensor([[float(v) for v in box]], dtype=torch.float64)
    bins = processor.post_processor.quantize(locations, size)[0]
    return "".join(f"<loc_{int(b)}>" for b in bins)


@register_backend(
    "florence-2",
    tasks=[Task.LOCATE, Task.DESCRIBE],
    model_types=("florence2",),
    capabilities=[
        Capability.RANKED_CANDIDATES,
        Capability.PHRASE_LABELS,
        Capability.QUERIES_BATCHED,
        Capability.IMAGE_ENCODED_ONCE,
        Capability.DENSE_CAPTIONS,
    ],
    settings=ModelSettings(
        default_threshold=0.0, num_beams=NUM_BEAMS, max_new_tokens=MAX_NEW_TOKENS
    ),
    models=[
        Model(
            "florence-2-base",
            "florence-community/Florence-2-base",
            "Florence-2 base (0.23B); grounds the phrases of a caption, describes regions",
        ),
        Model(
            "florence-2-large",
            "florence-community/Florence-2-large",
            "Florence-2 large (0.77B); more accurate than base, slower",
        ),
    ],
)
class Florence2Backend(Backend):
    def __init__(
        self,
        model: Florence2ForConditionalGeneration,
        processor: Florence2Processor,
        checkpoint: str | None = None,
        max_new_tokens: int = 256,
    ) -> None:
        """``max_new_tokens`` caps a grounding answer (locate), so a model that never ends it
        still stops; describe takes its own per call."""
        super().__init__(model, checkpoint)
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        tokenizer = self.processor.tokenizer
        self.location_ids = set(
            tokenizer.convert_tokens_to_ids([f"<loc_{i}>" for i in range(1000)])
        )
        #: Tokens that mark an answer's start and end, or pad it: no words of a caption.
        self.markers = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}

    @classmethod
    def from_pretrained(
        cls, checkpoint: str, device: torch.device, dtype: torch.dtype, **options: Any
    ) -> Florence2Backend:
        """``options`` are those of ``__init__`` (``max_new_tokens``)."""
        processor = from_pretrained(AutoProcessor.from_pretrained, checkpoint)
        model = from_pretrained(Florence2ForConditionalGeneration.from_pretrained, checkpoint)
        return cls(model.to(device=device, dtype=dtype), processor, checkpoint, **options)

    def prompt_for(self, task: str, text: str = "") -> str:
        """The encoder input the processor builds for ``task`` (with its input ``text``, if
        the task takes one) and one image."""
        return prompt_for(self.processor, task, text)

    def region_text(self, box: np.ndarray | list[float], size: tuple[int, int]) -> str:
        """A pixel box of an image of ``size`` as the model reads it: four location tags, by
        the processor's own quantisation."""
        return region_text(self.processor, box, size)

    # --- locate -------------------------------------------------------------------------------

    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        prompts = [self.prompt_for(GROUNDING, q) for q in queries]
        return [
            self._candidates(sequence, log_probs, image.size)
            for sequence, log_probs in self._generate(
                image, prompts, self.max_new_tokens, NUM_BEAMS
            )
        ]

    def _candidates(
        self, sequence: list[int], log_probs: list[float], size: tuple[int, int]
    ) -> Candidates:
        """Parse one grounding answer with the processor; score each box by its four location
        tokens (0 for a box whose tags were spelt out of ordinary tokens)."""
        found = self._regions(sequence, log_probs, GROUNDING, size)
        scores = [
            0.0 if tags is None else math.exp(sum(log_probs[i] for i in tags) / len(tags))
            for _, _, tags in found
        ]
        return Candidates([box for box, _, _ in found], scores, [label for _, label, _ in found])

    # --- describe -----------------------------------------------------------------------------

    def describe(
        self,
        image: Image.Image,
        boxes: np.ndarray | None,
        *,
        max_new_tokens: int,
        num_beams: int,
    ) -> list[Caption]:
        if boxes is None:
            return self._dense_captions(image, max_new_tokens, num_beams)
        prompts = [
            self.prompt_for(REGION_TO_DESCRIPTION, self.region_text(box, image.size))
            for box in boxes
        ]
        answers = self._generate(image, prompts, max_new_tokens, num_beams)
        return [
            Caption(
                [float(v) for v in box],
                self._post_process(sequence, REGION_TO_DESCRIPTION, image.size),
                mean_log_prob(sequence, log_probs, self.markers),
            )
            for box, (sequence, log_probs) in zip(boxes, answers)
        ]

    def _dense_captions(
        self, image: Image.Image, max_new_tokens: int, num_beams: int
    ) -> list[Caption]:
        """The regions the model finds and their words, each scored by its own tokens."""
        prompt = self.prompt_for(DENSE_REGION_CAPTION)
        ((sequence, log_probs),) = self._generate(image, [prompt], max_new_tokens, num_beams)
        return self._dense_regions(sequence, log_probs, image.size)

    def _dense_regions(
        self, sequence: list[int], log_probs: list[float], size: tuple[int, int]
    ) -> list[Caption]:
        """Parse one dense-caption answer with the processor; score each region by its words
        and its four location tokens (``None`` where its tags were spelt out of ordinary
        tokens)."""
        generated = sequence[len(sequence) - len(log_probs) :]
        captions = []
        for box, label, tags in self._regions(sequence, log_probs, DENSE_REGION_CAPTION, size):
            score = None
            if tags is not None:
                own = [*self._words_before(generated, tags[0]), *tags]
                score = sum(log_probs[i] for i in own) / len(own)
            captions.append(Caption([float(v) for v in box], label, score))
        return captions

    def _words_before(self, generated: list[int], position: int) -> list[int]:
        """Positions of the words just before the run of location tokens holding
        ``position``: the phrase of the region whose first tag is there."""
        start = position
        while start > 0 and generated[start - 1] in self.location_ids:
            start -= 1
        words = []
        while start > 0 and generated[start - 1] not in self.location_ids | self.markers:
            start -= 1
            words.append(start)
        return words[::-1]

    # --- the model ----------------------------------------------------------------------------

    def _generate(
        self, image: Image.Image, prompts: list[str], max_new_tokens: int, num_beams: int
    ) -> list[tuple[list[int], list[float]]]:
        """Each prompt's answer about ``image`` (its token ids, from the decoder's start) and
        the log-probability of each generated token, all prompts in one ``generate``."""
        encoded, attention_mask = self._encode(image, prompts)
        output = self.model.generate(
            encoder_outputs=encoded,
            attention_mask=attention_mask,
            num_beams=num_beams,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            output_scores=True,
            return_dict_in_generate=True,
        )
        log_probs = token_log_probs(self.model, output)
        return [(s.tolist(), p.tolist()) for s, p in zip(output.sequences, log_probs)]

    def _encode(
        self, image: Image.Image, prompts: list[str]
    ) -> tuple[BaseModelOutput, torch.Tensor]:
        """Run the encoder on every prompt, with the image encoded once for all.

        This is what the model does inside ``generate`` when given the pixels, minus the
        vision tower running once per prompt.
        """
        pixels = self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
        features = self.model.get_image_features(
            pixel_values=pixels.to(device=self.device, dtype=self.dtype)
        )
        features = getattr(features, "pooler_output", features)  # 5.0 returns the bare tensor
        text = self.processor.tokenizer(
            prompts,
            add_special_tokens=False,
            padding=True,
            padding_side="right",  # left padding would shift the learned positions of the prompt
            return_tensors="pt",
        ).to(self.device)
        embeds = self.model.get_input_embeddings()(text["input_ids"])
        features = features.to(embeds.dtype).expand(len(prompts), -1, -1)
        image_slots = self.model.get_placeholder_mask(
            text["input_ids"], inputs_embeds=embeds, image_features=features
        )
        encoded = self.model.get_encoder()(
            inputs_embeds=embeds.masked_scatter(image_slots, features),
            attention_mask=text["attention_mask"],
            return_dict=True,
        )
        return encoded, text["attention_mask"]

    # --- reading answers ----------------------------------------------------------------------

    def _post_process(self, sequence: list[int], task: str, size: tuple[int, int]) -> Any:
        """The processor's answer for ``task`` from one generated sequence (padding dropped:
        the processor strips it from parsed answers only, not from plain text)."""
        pad = self.processor.tokenizer.pad_token_id
        text = self.processor.tokenizer.decode(
            [t for t in sequence if t != pad], skip_special_tokens=False
        )
        return self.processor.post_process_generation(text, task=task, image_size=size)[task]

    def _regions(
        self, sequence: list[int], log_probs: list[float], task: str, size: tuple[int, int]
    ) -> list[Region]:
        """The ``(box, words)`` pairs of an answer, by the processor's post-processing, with
        the positions of each box's location tokens among the generated tokens.

        ``log_probs`` belong to the last tokens of ``sequence``. To learn which tokens made
        which box, the answer is parsed a second time with its n-th location tag rewritten
        as ``<loc_n>`` on a 1000x1000 image, where a box's coordinates read back as the
        numbers of its tags. The parser's patterns match tags whatever their digits, so
        both parses find the same boxes in the same order.
        """
        generated = sequence[len(sequence) - len(log_probs) :]
        tag_positions = [i for i, t in enumerate(generated) if t in self.location_ids]
        text = self.processor.tokenizer.decode(sequence, skip_special_tokens=False)
        parsed = self._parse(text, task, size)
        numbers = itertools.count()
        numbered, tag_count = LOCATION_TAG.subn(lambda _: f"<loc_{next(numbers)}>", text)
        if tag_count != len(tag_positions):
            # A tag spelt out of ordinary tokens: no token probabilities to score it with.
            logger.warning("location tags in %r are not all location tokens; not scored", text)
            return [(box, label, None) for box, label in parsed]
        return [
            (box, label, [tag_positions[int(n)] for n in tags])
            for (box, label), (tags, _) in zip(parsed, self._parse(numbered, task, BINS))
        ]

    def _parse(self, text: str, task: str, size: tuple[int, int]) -> list[tuple[list[float], str]]:
        """``(box, words)`` pairs of an answer, by the processor's own post-processing."""
        found = self.processor.post_process_generation(text, task=task, image_size=size)[task]
        return list(zip(found["bboxes"], found["labels"]))
