"""Fine-tuning the Qwen-VL backends (Qwen3-VL, Qwen2.5-VL) on their own answer format.

**What is learnt.** Each item is asked exactly as the backend asks it: the image and the
grounding prompt in one user turn of the checkpoint's chat template, the image's placeholder
expanded to its visual tokens. The target is the answer the backend parses, in the form Qwen
writes it: a fenced JSON list, one ``{"bbox_2d": [x1, y1, x2, y2], "label": <query>}`` per
box, in the model's own coordinates (0-1000 for Qwen3-VL, pixels of the resized image for
Qwen2.5-VL, the image resized as the backend resizes it), then the end-of-turn token, so
that generation stops where the answer does. A query whose referent is absent is taught the
fenced empty list ``[]``, which :func:`~sceneloc.backends.qwen_vl.parse_boxes` reads as no
box, the backend's "not there". Describe data asks the backend's describe prompt, the region
written in the model's coordinates, and teaches the caption. The loss is cross-entropy over
the answer tokens only (the prompt, the image tokens and the padding are labelled -100); the
logits are computed for the answer positions only, as the vocabulary is large and the image
tokens many.

**What learns.** LoRA by default, on the attention and MLP projections of the language model.
The vision tower's linears are left out: it is frozen (``freeze: vision``), as in Qwen's own
fine-tuning recipes, since a few hundred samples teach the language model where to look and
how to answer better than they retrain the encoder. Without LoRA the vision-language merger
(the projector) learns at ``lr`` and the language model at ``backbone_lr``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional

from sceneloc.backends.base import from_pretrained
from sceneloc.backends.qwen_vl import (
    DEFAULT_MAX_PIXELS,
    DESCRIBE_PROMPT,
    GROUNDING_PROMPT,
    BoxSpace,
    Flavour,
    QwenVLBackend,
    box_extent,
    chat_prompt,
    image_inputs,
    load_processor,
)
from sceneloc.training.finetune.recipe import FinetuneItem, Recipe

#: The language model's linear layers that LoRA adapts (the names Qwen gives them).
LANGUAGE_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Where the parts of a Qwen-VL model's parameters live.
VISION, MERGERS = "model.visual.", ("model.visual.merger", "model.visual.deepstack_merger")
LANGUAGE = ("model.language_model.", "lm_head.")
#: The answer to a query whose referent is absent: no box, which the backend reads as so.
NOT_FOUND = "```json\n[]\n```"
#: Labels the loss ignores.
IGNORE = -100


def answer_text(boxes: list[list[int]], label: str) -> str:
    """The answer the model is taught for ``boxes`` (its own coordinates), as Qwen writes it;
    no boxes: :data:`NOT_FOUND`."""
    if not boxes:
        return NOT_FOUND
    label = json.dumps(label, ensure_ascii=False)
    rows = ",\n".join(f'\t{{"bbox_2d": {json.dumps(box)}, "label": {label}}}' for box in boxes)
    return f"```json\n[\n{rows}\n]\n```"


class QwenVLRecipe(Recipe):
    """Qwen3-VL and Qwen2.5-VL, taught the answers their backend reads."""

    family = "qwen3-vl"
    tasks = ("locate", "describe")
    defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-4, "lora_rank": 16, "lora_alpha": 32, "freeze": "vision", "weight_decay": 0.0,
    }  # fmt: skip
    lora_targets: tuple[str, ...] = LANGUAGE_LINEARS
    flavour: Flavour

    def load(self, checkpoint: str) -> nn.Module:
        """The model in fp32 and its processor; the training images are resized to the budget
        the backend serves the trained model with on this machine's device."""
        self.flavour, self.processor = load_processor(checkpoint)
        model = from_pretrained(
            self.flavour.model_class.from_pretrained, checkpoint, dtype=torch.float32
        )
        self.max_pixels = DEFAULT_MAX_PIXELS["accelerator" if torch.cuda.is_available() else "cpu"]
        eos = model.generation_config.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        self.end_of_turn = int(eos if eos is not None else self.processor.tokenizer.eos_token_id)
        # Whole module names, so that the vision tower's linears of the same names (Qwen2.5-VL's
        # MLPs are gate/up/down_proj too) are not adapted.
        self.lora_targets = tuple(
            name for name, module in model.named_modules()
            if name.startswith(LANGUAGE[0]) and isinstance(module, nn.Linear)
            and name.rsplit(".", 1)[-1] in LANGUAGE_LINEARS
        )  # fmt: skip
        # The vision encoder by whole parameter names: the mergers inside it are not of it.
        names = [name for name, _ in model.named_parameters()]
        self._towers = {
            "vision": tuple(n for n in names if n.startswith(VISION) and not n.startswith(MERGERS)),
            "text": LANGUAGE,
        }
        return model

    def towers(self) -> dict[str, tuple[str, ...]]:
        """The vision encoder (the merger, which projects it into the language model, is not
        part of it) and the language model with its output layer."""
        return self._towers

    def collate(self, items: list[FinetuneItem]) -> dict[str, Any]:
        """The prompts with their images' tokens, then the answers; labels on answers only,
        sequences padded on the right."""
        processor = self.processor
        pixels = image_inputs(processor, [item.image for item in items], self.max_pixels)
        prompts, answers = [], []
        for index, item in enumerate(items):
            space = BoxSpace(
                box_extent(self.flavour, processor, pixels["image_grid_thw"][index]),
                item.image.size,
            )
            boxes = space.to_model(item.boxes)
            if self.options.task == "describe":
                prompts.append(DESCRIBE_PROMPT.format(box=boxes[0]))
                answers.append(item.query)
            else:
                prompts.append(GROUNDING_PROMPT.format(query=item.query))
                answers.append(answer_text(boxes, item.query))
        texts, _ = processor.get_text_with_replacements(
            [chat_prompt(processor, p) for p in prompts],
            [processor.replace_image_token(pixels, i) for i in range(len(items))],
        )
        tokenizer = processor.tokenizer
        prompt_ids = tokenizer(texts)["input_ids"]
        answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
        sequences = [p + a + [self.end_of_turn] for p, a in zip(prompt_ids, answer_ids)]
        length = max(map(len, sequences))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_of_turn
        input_ids = torch.full((len(items), length), pad, dtype=torch.long)
        labels = torch.full((len(items), length), IGNORE, dtype=torch.long)
        attention = torch.zeros((len(items), length), dtype=torch.long)
        for row, (sequence, prompt) in enumerate(zip(sequences, prompt_ids)):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            labels[row, len(prompt) : len(sequence)] = torch.tensor(sequence[len(prompt) :])
            attention[row, : len(sequence)] = 1
        types = torch.tensor(processor.create_mm_token_type_ids(input_ids.tolist()))
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "mm_token_type_ids": types,
            "pixel_values": pixels["pixel_values"],
            "image_grid_thw": pixels["image_grid_thw"],
            "labels": labels,
        }

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Mean cross-entropy of the answer tokens (each predicted from the one before)."""
        inputs = dict(batch)
        labels = inputs.pop("labels")
        # Logits from the position before the earliest answer token on: the prompts' (mostly
        # image tokens) would only be thrown away.
        first = int((labels != IGNORE).any(0).nonzero()[0])
        keep = labels.shape[1] - first + 1
        logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
        return functional.cross_entropy(
            logits[:, :-1].float().flatten(0, 1), labels[:, first:].flatten(), ignore_index=IGNORE
        )

    def backend(self, model: nn.Module) -> QwenVLBackend:
        return QwenVLBackend(model, self.processor, max_pixels=self.max_pixels)

    def metric_keys(self) -> dict[str, str]:
        if self.options.task == "describe":
            return {"val_cider": "cider", "val_bleu4": "bleu4"}
        return super().metric_keys()

    def evaluate(self, model: nn.Module, data: str, limit: int | None) -> dict[str, Any]:
        """Locate data as ``sceneloc evaluate`` scores it; describe data as ``sceneloc
        evaluate --task describe`` does, without METEOR (a JVM to start each epoch)."""
        if self.options.task != "describe":
            return super().evaluate(model, data, limit)
        from sceneloc.api import Describer
        from sceneloc.evaluation import evaluate_describer

        describer = Describer(self.backend(model), "validation")
        return evaluate_describer(data, describer, limit=limit, meteor=False).to_dict()

    def save(self, model: nn.Module, directory: Path) -> None:
        """The model, image processor, tokenizer and chat template, as the hub's Qwen-VL
        repositories hold them (the processor itself is saved under a class of its own that
        plain transformers does not know)."""
        model.save_pretrained(directory)
        self.processor.image_processor.save_pretrained(directory)
        self.processor.tokenizer.save_pretrained(directory)
        if self.processor.chat_template:
            (Path(directory) / "chat_template.jinja").write_text(
                self.processor.chat_template, encoding="utf-8"
            )
