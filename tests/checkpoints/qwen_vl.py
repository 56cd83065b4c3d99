"""Tiny randomly initialised Qwen3-VL and Qwen2.5-VL checkpoints on disk, built offline.

The tokenizer is a small byte-level BPE with Qwen's special tokens and a Qwen-style chat
template. Random weights would write garbage, so the language model is biased to answer a
prompt the way Qwen-VL answers a grounding prompt: a fenced JSON list with one box and a
label. Each step's current token says which class of token comes next (a dimension of its
embedding that the output layer reads), so the answer follows the grammar
``open x1 y1 x2 y2 close <|im_end|>``; the attention, which reads the image and the query,
picks which token of the class, so the box depends on both. The coordinate tokens of each
slot are spelt apart (``"150"``, ``", 150"``, ``", 650"``, ``", 650]"``) so that the current
token alone knows the slot; x1 and y1 are drawn from low values and x2 and y2 from high ones,
so every box has an area, and the last slot can reach past the range the model writes in, as
Qwen's answers sometimes do. Qwen3-VL's values are relative to 0-1000; Qwen2.5-VL's are
pixels of the resized test scene (168 x 84).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)

#: Text the byte-level BPE vocabulary is learnt from: the backend's prompts and test queries.
CORPUS = [
    'Locate every object that matches the description "the red square" in the image.',
    "Report bbox coordinates in JSON format.",
    "Does the region of the image show a green circle left of the blue triangle?",
    "Answer yes or no. Yes No yes no",
    "The image has these numbered candidate boxes: Which one is it?",
    'Answer with its number only, or "none" if no candidate is. none None',
    "user assistant system 0123456789",
]
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
VISION = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
#: The user's content in order (an image, then text), as Qwen's own template lays it out.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: Coordinates each generation writes: low (x1, y1), high (x2, y2), and one past its range.
VALUES = {
    "qwen3_vl": (range(100, 500, 50), range(550, 950, 50), 1040),
    "qwen2_5_vl": (range(4, 40, 4), range(44, 80, 4), 90),
}
#: The width of the residual stream, and the weight of the dimensions marking token classes.
HIDDEN = 32
CLASS_WEIGHT = 8.0
#: How much sharper than at initialisation the attention is, so a few tokens dominate it.
SHARPNESS = 3.0
MERGE = 2


def grammar(model_type: str) -> dict[str, list[str]]:
    """The answer's token classes in the order written; each is followed by the next."""
    low, high, past = VALUES[model_type]
    return {
        "open": ['```json\n[\n\t{"bbox_2d": ['],
        "x1": [f"{v}" for v in low],
        "y1": [f", {v}" for v in low],
        "x2": [f", {v}" for v in high],
        "y2": [f", {v}]" for v in [*high, past]],
        "close": [', "label": "shape"}\n]\n```'],
        "end": [IM_END],
    }


def byte_level(text: str) -> str:
    """``text`` spelt in the byte-level alphabet the vocabulary stores tokens in."""
    ((spelt, _),) = pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=False
    ).pre_tokenize_str(text)
    return spelt


def qwen_tokenizer(model_type: str) -> Qwen2Tokenizer:
    """A small byte-level BPE with Qwen's special tokens, chat template and answer pieces."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    for pieces in grammar(model_type).values():
        for piece in pieces:
            # Whole pieces the model writes in one step; text is never split into them.
            if piece != IM_END:
                vocab.setdefault(byte_level(piece), len(vocab))
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=[tuple(merge) for merge in model["merges"]],
        extra_special_tokens=[IM_START, IM_END, *VISION],
        chat_template=CHAT_TEMPLATE,
    )


def special_ids(tokenizer: Qwen2Tokenizer) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,  # lets the output layer be set apart from the inputs
    )


def text_config(tokenizer: Qwen2Tokenizer, **extra) -> dict:
    return dict(
        bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        # 16 dimensions a head: 8 rotary frequencies, shared by time, height and width
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]},
        **extra,
    )  # fmt: skip


def vision_config(patch: int, **extra) -> dict:
    return dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=patch,
        spatial_merge_size=MERGE, temporal_patch_size=2, out_hidden_size=HIDDEN, **extra,
    )  # fmt: skip


def build_qwen3_vl(directory: Path, seed: int = 0) -> Path:
    """Save a tiny Qwen3-VL (16 px patches, deepstack from the first vision layer)."""
    tokenizer = qwen_tokenizer("qwen3_vl")
    config = Qwen3VLConfig(
        text_config=text_config(tokenizer, head_dim=16),
        vision_config=vision_config(16, num_position_embeddings=16, deepstack_visual_indexes=[0]),
        **special_ids(tokenizer),
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    return save(directory, model, tokenizer, patch=16)


def build_qwen2_5_vl(directory: Path, seed: int = 0) -> Path:
    """Save a tiny Qwen2.5-VL (14 px patches, windowed then full vision attention)."""
    tokenizer = qwen_tokenizer("qwen2_5_vl")
    config = Qwen2_5_VLConfig(
        text_config=text_config(tokenizer),
        vision_config=vision_config(14, window_size=56, fullatt_block_indexes=[1]),
        **special_ids(tokenizer),
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    return save(directory, model, tokenizer, patch=14)


def save(directory: Path, model: PreTrainedModel, tokenizer, patch: int) -> Path:
    """Bias ``model`` to answer in its grammar and save it with its tokenizer (which carries
    the chat template) and its image processor, as the hub's Qwen-VL repositories hold them."""
    speak_grounding_grammar(model.eval(), tokenizer)
    generation = model.generation_config
    generation.eos_token_id = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id]
    generation.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    unit = (patch * MERGE) ** 2  # the pixels of one visual token
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 4 * unit, "longest_edge": 64 * unit},
        patch_size=patch,
        merge_size=MERGE,
        temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    image_processor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@torch.no_grad()
def speak_grounding_grammar(model: PreTrainedModel, tokenizer) -> None:
    """Bias the language model so that it answers in the order of :func:`grammar`."""
    classes = [
        tokenizer.convert_tokens_to_ids([p if p == IM_END else byte_level(p) for p in pieces])
        for pieces in grammar(model.config.model_type).values()
    ]
    marks = len(classes)
    text = model.model.language_model
    embeddings, output = text.embed_tokens.weight, model.lm_head.weight
    # Dimension c of a token's embedding marks the class of the token that follows it; every
    # token but those of the answer is followed by the answer's opening (class 0).
    embeddings.normal_(0.0, 1.0)
    embeddings[:, :marks] = 0.0
    embeddings[:, 0] = CLASS_WEIGHT
    # Output rows: a strong weight on their class's dimension, random ones off the marks.
    output.normal_(0.0, 1.5)
    output[:, :marks] = 0.0
    for position, ids in enumerate(classes):
        output[ids, position] = CLASS_WEIGHT
        if position + 1 < marks:
            embeddings[ids, :marks] = 0.0
            embeddings[ids, position + 1] = CLASS_WEIGHT
    # The image and the query reach the last token through the attention: make it count (sharp,
    # carrying what sets tokens apart rather than the class marks they share), and keep it and
    # the MLPs off the dimensions that carry the grammar.
    for layer in text.layers:
        attention = layer.self_attn
        # Qwen3 normalises queries and keys: scale the norms. Qwen2.5 does not: scale the
        # projections, to entries of about one first (the initialisation's are a few hundredths).
        if hasattr(attention, "q_norm"):
            sharpened = [(attention.q_norm, SHARPNESS), (attention.k_norm, SHARPNESS)]
        else:
            sharpened = [(attention.q_proj, 5 * SHARPNESS), (attention.k_proj, 5 * SHARPNESS)]
        for module, factor in sharpened:
            for parameter in module.parameters():
                parameter.mul_(factor)
        for projection in (attention.q_proj, attention.k_proj, attention.v_proj):
            projection.weight[:, :marks] = 0.0
        attention.v_proj.weight.mul_(10.0)
        attention.o_proj.weight.mul_(10.0)
        attention.o_proj.weight[:marks] = 0.0
        layer.mlp.down_proj.weight[:marks] = 0.0


def plain_processor(directory: Path) -> Qwen3VLProcessor | Qwen2_5_VLProcessor:
    """transformers' own processor for a saved checkpoint, as a user without torchvision
    builds it: the PIL image processor, the tokenizer and the chat template, no video."""
    from sceneloc.backends.qwen_vl import without_video

    config = json.loads((Path(directory) / "config.json").read_text())
    processor_class = {"qwen3_vl": Qwen3VLProcessor, "qwen2_5_vl": Qwen2_5_VLProcessor}
    return without_video(processor_class[config["model_type"]])(
        Qwen2VLImageProcessorPil.from_pretrained(directory),
        AutoTokenizer.from_pretrained(directory),
        chat_template=CHAT_TEMPLATE,
    )


def prompt_inputs(processor, image, prompt: str, **images_kwargs) -> dict:
    """The processor's inputs for one user turn: ``image``, then ``prompt``."""
    content = [{"type": "image"}, {"type": "text", "text": prompt}]
    text = processor.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    return dict(processor(text=[text], images=[image], return_tensors="pt", **images_kwargs))


#: Text the fine-tuning tests' tokenizer learns from: the backend's prompts and the answers it
#: parses, so that an answer is a few dozen tokens (the digits of its coordinates apart).
ANSWER_CORPUS = [
    *CORPUS,
    '```json\n[\n\t{"bbox_2d": [120, 340, 560, 980], "label": "the red square"},',
    '\t{"bbox_2d": [4, 16, 88, 72], "label": "the blue circle"}\n]\n```',
    "```json\n[]\n```",
    'Describe the region {"bbox_2d": [10, 20, 30, 40]} of the image in a short phrase that '
    "singles it out. a red square, the blue circle, a green triangle",
]


def build_qwen_vl_to_train(directory: Path, model_type: str = "qwen3_vl", seed: int = 0) -> Path:
    """Save a tiny Qwen3-VL or Qwen2.5-VL with plain random weights (no answer grammar built
    in, unlike :func:`build_qwen3_vl`), for fine-tuning to teach it to answer: 64 wide, its
    tokenizer learnt from :data:`ANSWER_CORPUS`."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(ANSWER_CORPUS, trainer)
    model = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(
        vocab=dict(model["vocab"]),
        merges=[tuple(merge) for merge in model["merges"]],
        extra_special_tokens=[IM_START, IM_END, *VISION],
        chat_template=CHAT_TEMPLATE,
    )
    text = text_config(tokenizer, head_dim=16)
    text.update(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(seed)
    if model_type == "qwen3_vl":
        vision = vision_config(16, num_position_embeddings=16, deepstack_visual_indexes=[0])
        vision["out_hidden_size"] = 64
        config = Qwen3VLConfig(text_config=text, vision_config=vision, **special_ids(tokenizer))
        model, patch = Qwen3VLForConditionalGeneration(config), 16
    else:
        vision = vision_config(14, window_size=56, fullatt_block_indexes=[1])
        vision["out_hidden_size"] = 64
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special_ids(tokenizer))
        model, patch = Qwen2_5_VLForConditionalGeneration(config), 14
    with torch.no_grad():
        # Rows as long as a trained model's: LoRA leaves them frozen, and rows of the
        # initialisation's length cap every logit near 1, so no answer could become likely.
        model.lm_head.weight.normal_(0.0, 0.3)
        model.model.language_model.embed_tokens.weight.normal_(0.0, 1.0)
    generation = model.generation_config
    generation.eos_token_id = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id]
    generation.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    unit = (patch * MERGE) ** 2
    Qwen2VLImageProcessorPil(
        size={"shortest_edge": 4 * unit, "longest_edge": 64 * unit}, patch_size=patch,
        merge_size=MERGE, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    ).save_pretrained(directory)  # fmt: skip
    tokenizer.save_pretrained(directory)
    return directory
