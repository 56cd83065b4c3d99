"""Florence-2: phrase grounding by generation (``<CAPTION_TO_PHRASE_GROUNDING>``).

The model writes ``phrase<loc_x1><loc_y1><loc_x2><loc_y2>...`` for the phrases of the query
it can find; the processor's own post-processing turns that text into pixel boxes.

Florence-2 gives no box scores, so each box is scored here by the geometric mean of the
probabilities of the four location tokens that produced it (from the beam search's
per-token scores): how sure the model was of where the box is, in ``[0, 1]``. Whether
something is there at all the model decides by writing a box or not, so by default every
box it writes is kept (``default_threshold`` is 0) and the score ranks them.

Decoding is the beam search of the reference usage (three beams, no sampling), so it is
deterministic. All queries of a call go through one ``generate``: the image is preprocessed
and run through the vision tower once, its features shared by every query's prompt. The
prompts are padded on the right, where the attention mask hides the padding and the learned
positions of the real tokens do not move, so each query gets what it gets when asked alone
(up to float rounding, which differs with the batch size).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from typing import Any

import torch
from PIL import Image
from transformers import AutoProcessor, Florence2ForConditionalGeneration, Florence2Processor
from transformers.modeling_outputs import BaseModelOutput

from sceneloc.backends.base import Backend, from_pretrained
from sceneloc.candidates import Candidates
from sceneloc.registry import Capability, Model, ModelSettings, Task, register_backend

logger = logging.getLogger(__name__)

TASK = "<CAPTION_TO_PHRASE_GROUNDING>"
#: Beams of the reference Florence-2 usage (the examples of the model cards).
NUM_BEAMS = 3
#: How the processor's parser recognises a location token in the decoded answer.
LOCATION_TAG = re.compile(r"<loc_\d+>")


@register_backend(
    "florence-2",
    tasks=[Task.LOCATE],
    model_types=("florence2",),
    capabilities=[
        Capability.RANKED_CANDIDATES,
        Capability.PHRASE_LABELS,
        Capability.QUERIES_BATCHED,
        Capability.IMAGE_ENCODED_ONCE,
    ],
    settings=ModelSettings(default_threshold=0.0),
    models=[
        Model(
            "florence-2-base",
            "florence-community/Florence-2-base",
            "Florence-2 base (0.23B); grounds the phrases of a caption by generation",
        ),
        Model(
            "florence-2-large",
            "florence-community/Florence-2-large",
            "Florence-2 large (0.77B); more accurate grounding than base, slower",
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
        """``max_new_tokens`` caps generation, so a model that never ends its answer still stops."""
        super().__init__(model, checkpoint)
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        tokenizer = self.processor.tokenizer
        self.location_ids = set(
            tokenizer.convert_tokens_to_ids([f"<loc_{i}>" for i in range(1000)])
        )

    @classmethod
    def from_pretrained(
        cls, checkpoint: str, device: torch.device, dtype: torch.dtype, **options: Any
    ) -> Florence2Backend:
        """``options`` are those of ``__init__`` (``max_new_tokens``)."""
        processor = from_pretrained(AutoProcessor.from_pretrained, checkpoint)
        model = from_pretrained(Florence2ForConditionalGeneration.from_pretrained, checkpoint)
        return cls(model.to(device=device, dtype=dtype), processor, checkpoint, **options)

    def prompt_for(self, query: str) -> str:
        """The encoder input the processor builds for one query and one image."""
        tokenizer = self.processor.tokenizer
        image_tokens = self.processor.image_token * self.processor.num_image_tokens
        text = self.processor.task_prompts_with_input[TASK].format(input=query.strip())
        return f"{image_tokens}{tokenizer.bos_token}{text}{tokenizer.eos_token}"

    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        encoded, attention_mask = self._encode(image, queries)
        output = self.model.generate(
            encoder_outputs=encoded,
            attention_mask=attention_mask,
            num_beams=NUM_BEAMS,
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            output_scores=True,
            return_dict_in_generate=True,
        )
        log_probs = self.model.compute_transition_scores(
            output.sequences, output.scores, output.beam_indices, normalize_logits=False
        )
        return [
            self._candidates(sequence.tolist(), scores.tolist(), image.size)
            for sequence, scores in zip(output.sequences, log_probs.float())
        ]

    def _encode(
        self, image: Image.Image, queries: list[str]
    ) -> tuple[BaseModelOutput, torch.Tensor]:
        """Run the encoder on every query's prompt, with the image encoded once for all.

        This is what the model does inside ``generate`` when given the pixels, minus the
        vision tower running once per query.
        """
        pixels = self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
        features = self.model.get_image_features(
            pixel_values=pixels.to(device=self.device, dtype=self.dtype)
        )
        features = getattr(features, "pooler_output", features)  # 5.0 returns the bare tensor
        text = self.processor.tokenizer(
            [self.prompt_for(q) for q in queries],
            add_special_tokens=False,
            padding=True,
            padding_side="right",  # left padding would shift the learned positions of the prompt
            return_tensors="pt",
        ).to(self.device)
        embeds = self.model.get_input_embeddings()(text["input_ids"])
        features = features.to(embeds.dtype).expand(len(queries), -1, -1)
        image_slots = self.model.get_placeholder_mask(
            text["input_ids"], inputs_embeds=embeds, image_features=features
        )
        encoded = self.model.get_encoder()(
            inputs_embeds=embeds.masked_scatter(image_slots, features),
            attention_mask=text["attention_mask"],
            return_dict=True,
        )
        return encoded, text["attention_mask"]

    def _candidates(
        self, sequence: list[int], log_probs: list[float], size: tuple[int, int]
    ) -> Candidates:
        """Parse one answer with the processor; score each box by its four location tokens.

        ``log_probs`` belong to the last tokens of ``sequence``. To learn which tokens made
        which box, the answer is parsed a second time with its n-th location tag rewritten
        as ``<loc_n>`` on a 1000x1000 image, where a box's coordinates read back as the
        numbers of its tags. The parser's patterns match tags whatever their digits, so
        both parses find the same boxes in the same order.
        """
        generated = sequence[len(sequence) - len(log_probs) :]
        tag_log_probs = [p for t, p in zip(generated, log_probs) if t in self.location_ids]
        text = self.processor.tokenizer.decode(sequence, skip_special_tokens=False)
        numbers = itertools.count()
        numbered, tag_count = LOCATION_TAG.subn(lambda _: f"<loc_{next(numbers)}>", text)
        parsed = self._parse(text, size)
        if tag_count != len(tag_log_probs):
            # A tag spelt out of ordinary tokens: no token probabilities to score it with.
            logger.warning("location tags in %r are not all location tokens; scored 0", text)
            scores = [0.0] * len(parsed)
        else:
            scores = [
                math.exp(sum(tag_log_probs[n] for n in tags) / len(tags))
                for tags, _ in self._parse(numbered, (1000, 1000))
            ]
        return Candidates([box for box, _ in parsed], scores, [label for _, label in parsed])

    def _parse(self, text: str, size: tuple[int, int]) -> list[tuple[list[int], str]]:
        """``(box, phrase)`` pairs of an answer, by the processor's own post-processing."""
        found = self.processor.post_process_generation(text, task=TASK, image_size=size)[TASK]
        return list(zip(found["bboxes"], found["labels"]))
