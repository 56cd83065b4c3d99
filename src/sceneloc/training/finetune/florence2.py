"""Fine-tuning Florence-2: its own sequence-to-sequence loss on the answers it writes.

**Locate** teaches ``<CAPTION_TO_PHRASE_GROUNDING>`` with the query as the caption. The
target is what the backend parses: the query as one phrase, then each of its boxes as four
of the processor's 1000-bin location tokens (``the red square<loc_..><loc_..><loc_..>
<loc_..>``), so the fine-tuned model writes the referent, and only it, under the name it was
asked for. A query whose referent is absent is taught the empty answer (``<s></s>``): the
processor's parser then finds no phrase and the backend no box. The empty answer is the
one "not there" that the parser cannot misread: a phrase written without a box is also
parsed as nothing, but the model must then decide twice (write the phrase, then end before
any box), and a model half-way through learning writes the box anyway.

**Describe** teaches ``<REGION_TO_DESCRIPTION>`` with the region's location tokens in the
prompt and the caption (the sample's query) as the answer; validation is the describe
evaluation of ``sceneloc evaluate --task describe`` (BLEU, CIDEr-D) and ``best/`` is the
epoch of the highest CIDEr-D.

The loss is the token-mean cross-entropy of the answer, computed here from the logits: the
decoder reads the answer shifted right once (``decoder_start_token_id`` first), the logits
at each position are scored against the unshifted answer, and padding is ``-100``, out of
the loss. (transformers once shifted the labels a second time inside its loss; computing
the loss here keeps training right whichever version runs.)

Defaults: the vision tower (DaViT) is frozen, as in the HF blog's and Roboflow's recipes:
the pretrained image features carry Florence-2's grounding, and a few hundred samples
would wear them down faster than they teach. The learning rate is ``1e-5``: maestro's LoRA
figure, and ten times the blog's full fine-tuning one (``1e-6``), which was set for tens of
thousands of steps of DocVQA; a few hundred to a few thousand samples over five epochs are a
few hundred steps, where ``1e-6`` barely moves the weights. LoRA adapts the BART attention
(``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) and feed-forward (``fc1``, ``fc2``) layers
and, unless the vision tower is frozen, DaViT's (``qkv``, ``proj``, ``fc1``, ``fc2``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoProcessor, Florence2ForConditionalGeneration

from sceneloc.backends.base import from_pretrained
from sceneloc.backends.florence2 import (
    GROUNDING,
    REGION_TO_DESCRIPTION,
    Florence2Backend,
    prompt_for,
    region_text,
)
from sceneloc.training.finetune.recipe import FinetuneItem, Recipe
from sceneloc.training.options import TrainingError

logger = logging.getLogger(__name__)

#: Labels the loss leaves out (padding), as PyTorch's cross-entropy and transformers mean it.
IGNORE = -100
#: Linear layers of the native transformers port that LoRA adapts: BART's attention and
#: feed-forward layers, DaViT's attention (its feed-forward layers are ``fc1``/``fc2`` too).
BART_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
DAVIT_TARGETS = ("qkv", "proj", "fc1", "fc2")
VISION = ("model.vision_tower.",)


class Florence2Recipe(Recipe):
    family = "florence-2"
    tasks = ("locate", "describe")
    defaults: ClassVar[dict[str, Any]] = {"lr": 1e-5, "freeze": "vision"}
    lora_targets = tuple(dict.fromkeys(BART_TARGETS + DAVIT_TARGETS))

    def load(self, checkpoint: str) -> nn.Module:
        if self.options.task == "describe" and self.options.absent_fraction:
            raise TrainingError(
                "absent_fraction teaches 'not there' to a grounder; describe data has a "
                "region for every caption"
            )
        if self.options.freeze == "text":
            raise TrainingError(
                "Florence-2 has no text tower apart from its encoder-decoder, which is what "
                "learns: freeze vision (the default) or none"
            )
        self.processor = from_pretrained(AutoProcessor.from_pretrained, checkpoint)
        model = from_pretrained(Florence2ForConditionalGeneration.from_pretrained, checkpoint)
        text = model.config.text_config
        self.decoder_start, self.pad = text.decoder_start_token_id, text.pad_token_id
        return model

    def towers(self) -> dict[str, tuple[str, ...]]:
        """The vision tower is DaViT. Florence-2 has no text tower of its own: its
        encoder-decoder reads the prompt and the image features together, and its word
        embeddings are also its output layer (tied), which must learn at the full rate to
        write new answers."""
        return {"vision": VISION, "text": ()}

    # --- inputs and targets -------------------------------------------------------------------

    def prompt(self, item: FinetuneItem) -> str:
        """What the model reads for ``item``, exactly as the backend asks it."""
        if self.options.task == "describe":
            return prompt_for(
                self.processor, REGION_TO_DESCRIPTION,
                region_text(self.processor, region_of(item), item.image.size),
            )  # fmt: skip
        return prompt_for(self.processor, GROUNDING, item.query)

    def target(self, item: FinetuneItem) -> str:
        """What the model is taught to write for ``item`` (special tokens added later)."""
        if self.options.task == "describe":
            return item.query.strip()
        if not len(item.boxes):
            return ""  # "not there": the empty answer, in which the parser finds nothing
        boxes = "".join(region_text(self.processor, box, item.image.size) for box in item.boxes)
        return item.query.strip() + boxes

    def collate(self, items: list[FinetuneItem]) -> dict[str, Any]:
        """Pixels, the prompts (padded on the right, as the backend pads them) and the
        answers as labels, ``<s>answer</s>``, padded with ``-100``."""
        tokenizer = self.processor.tokenizer
        pixels = self.processor.image_processor(
            images=[item.image for item in items], return_tensors="pt"
        )["pixel_values"]
        prompts = tokenizer(
            [self.prompt(item) for item in items], add_special_tokens=False, padding=True,
            padding_side="right", return_tensors="pt",
        )  # fmt: skip
        answers = tokenizer(
            [self.target(item) for item in items], add_special_tokens=True, padding=True,
            padding_side="right", return_tensors="pt",
        )  # fmt: skip
        labels = answers["input_ids"].masked_fill(answers["attention_mask"] == 0, IGNORE)
        return {"input_ids": prompts["input_ids"], "attention_mask": prompts["attention_mask"],
                "pixel_values": pixels, "labels": labels}  # fmt: skip

    # --- the loss -----------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Token-mean cross-entropy of the answers, padding left out."""
        labels = batch["labels"]
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
            decoder_input_ids=decoder_inputs(labels, self.decoder_start, self.pad),
            use_cache=False,
        ).logits  # fmt: skip
        return F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten().to(logits.device), ignore_index=IGNORE
        )

    # --- serving, evaluating, LoRA ------------------------------------------------------------

    def backend(self, model: nn.Module) -> Florence2Backend:
        return Florence2Backend(model, self.processor)

    def metric_keys(self) -> dict[str, str]:
        """Describe runs keep the epoch of the best CIDEr-D."""
        if self.options.task == "describe":
            return {"val_cider": "cider", "val_bleu4": "bleu4"}
        return super().metric_keys()

    def evaluate(self, model: nn.Module, data: str, limit: int | None) -> dict[str, Any]:
        """Locate: Acc@0.5 and mean IoU, as ``sceneloc evaluate``. Describe: captions of the
        validation regions scored by ``sceneloc evaluate --task describe`` (no METEOR: a
        JVM started at each validation), answers capped at the backend's grounding length
        so that a model that never ends its answer still stops."""
        if self.options.task != "describe":
            return super().evaluate(model, data, limit)
        from sceneloc.api import Describer
        from sceneloc.evaluation.describing import evaluate_describer

        backend = self.backend(model)
        settings = dataclasses.replace(
            backend.family.settings,
            max_new_tokens=min(backend.family.settings.max_new_tokens, backend.max_new_tokens),
        )
        describer = Describer(backend, "validation", settings)
        return evaluate_describer(data, describer, limit=limit, meteor=False).to_dict()

    def prepare_for_lora(self, model: nn.Module) -> None:
        """LoRA adapts the target layers outside a frozen tower (a frozen tower learns
        nothing, adapters included): named in full for peft."""
        frozen = self.towers()[self.options.freeze] if self.options.freeze != "none" else ()
        names = set(self.lora_targets)
        self.lora_targets = tuple(  # type: ignore[misc]  (this run's own list)
            name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in names
            and not name.startswith(frozen)
        )  # fmt: skip


def region_of(item: FinetuneItem) -> np.ndarray:
    """The one region of a describe item (the union, if it holds several boxes)."""
    if not len(item.boxes):
        raise TrainingError(f"describe data needs a region for its caption {item.query!r}")
    boxes = np.asarray(item.boxes, dtype=np.float64)
    return np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])


def decoder_inputs(labels: torch.Tensor, start: int, pad: int) -> torch.Tensor:
    """What the decoder reads to predict ``labels``: the labels shifted right once, the
    start token first, padding (``-100``) read as the pad token."""
    shifted = torch.full_like(labels, pad)
    shifted[:, 0] = start
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE, pad)
