"""A tiny randomly initialised Florence-2 checkpoint on disk, built offline.

Random weights would generate garbage, so the decoder is biased to answer in Florence-2's
grounding grammar: ``<s>``, a two-word phrase, a box, a one-word phrase, a box, ``</s>``.
The step's learned position embedding picks which class of token comes next (phrase word,
low location, high location, end); it and the strengthened cross-attention pick which token
of the class, so the boxes depend on the image and the query and are scored below 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    BartTokenizer,
    CLIPImageProcessorPil,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
)

#: Text the byte-level BPE vocabulary is learnt from: the grounding prompt and test queries.
CORPUS = [
    "Locate the phrases in the caption: the red square",
    "a green circle left of the blue triangle",
    "What is the object in the image?",
]
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0-3, as in BART
TASK_TOKENS = ["<od>", "</od>", "<ocr>", "</ocr>", "<cap>", "</cap>", "<grounding>", "</grounding>"]
#: How the processor parses the answers of the tasks sceneloc asks (grounding, region
#: descriptions, dense captions), as the released checkpoints' processors do.
POST_PROCESSOR_CONFIG = {
    "phrase_grounding": {"banned_grounding_tokens": ["the image"]},
    "pure_text": {},
    "description_with_bboxes": {},
}
IMAGE_SIZE = 64  # four DaViT stages divide by 32: a 2x2 grid, plus one pooled token
D_MODEL = 32
#: Decoder position -> token class of the next token (then end of sequence for ever).
BOS, WORD, LOW_LOC, HIGH_LOC, END = range(5)
GRAMMAR = [BOS, WORD, WORD, LOW_LOC, LOW_LOC, HIGH_LOC, HIGH_LOC, WORD]
GRAMMAR += [LOW_LOC, LOW_LOC, HIGH_LOC, HIGH_LOC, END]


def bart_tokenizer(corpus: list[str] = CORPUS) -> BartTokenizer:
    """A small byte-level BPE with BART's special tokens and Florence-2's added tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = {**model["vocab"], "<mask>": len(model["vocab"])}
    locations = [f"<loc_{i}>" for i in range(1000)]
    return BartTokenizer(
        vocab=vocab,
        merges=[tuple(merge) for merge in model["merges"]],
        image_token="<image>",
        extra_special_tokens=TASK_TOKENS + locations,
    )


def build_florence2(directory: Path, seed: int = 0) -> Path:
    """Save a tiny Florence-2 (DaViT + BART) with its processor; deterministic for a seed."""
    tokenizer = bart_tokenizer()
    image_processor = CLIPImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False,
        image_seq_length=(IMAGE_SIZE // 32) ** 2 + 1,
    )
    processor = Florence2Processor(
        image_processor,
        tokenizer,
        post_processor_config=POST_PROCESSOR_CONFIG,
    )
    vision = dict(
        depths=[1, 1, 1, 1], embed_dim=[8, 16, 16, 32], num_heads=[1, 1, 2, 2],
        num_groups=[1, 1, 2, 2], window_size=2, projection_dim=D_MODEL, drop_path_rate=0.0,
    )  # fmt: skip
    text = dict(
        model_type="bart", vocab_size=len(tokenizer), d_model=D_MODEL, encoder_layers=1,
        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
        bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2,
    )  # fmt: skip
    config = Florence2Config(
        text_config=text,
        vision_config=vision,
        image_token_id=tokenizer.image_token_id,
        tie_word_embeddings=False,  # lets the output layer be set apart from the inputs
    )
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    _speak_grounding_grammar(model, tokenizer)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@torch.no_grad()
def _speak_grounding_grammar(model: Florence2ForConditionalGeneration, tokenizer) -> None:
    """Bias the decoder so that it writes phrases and boxes in the order of ``GRAMMAR``."""
    vocab = tokenizer.get_vocab()
    words = sorted(
        i for t, i in vocab.items() if t.startswith("Ġ") and t[1:].isalpha() and len(t) > 3
    )
    locations = tokenizer.convert_tokens_to_ids([f"<loc_{i}>" for i in range(1000)])
    classes = {
        BOS: [tokenizer.bos_token_id],
        WORD: words,
        LOW_LOC: locations[:500],  # x1, y1 below x2, y2: boxes with an area
        HIGH_LOC: locations[500:],
        END: [tokenizer.eos_token_id],
    }
    decoder = model.model.language_model.decoder
    # Learned positions start at row 2 (BART's offset); dimension c of a row marks class c,
    # and random values in the other dimensions make each step prefer tokens of its own.
    positions = decoder.embed_positions.weight
    for step in range(positions.shape[0] - 2):
        positions[step + 2, GRAMMAR[step] if step < len(GRAMMAR) else END] += 4.0
        positions[step + 2, len(classes) :] += torch.randn(positions.shape[1] - len(classes)) * 0.5
    # The image and the query reach the decoder through the cross-attention: make it count.
    cross = decoder.layers[0].encoder_attn
    cross.v_proj.weight.mul_(10.0)
    cross.out_proj.weight.mul_(10.0)
    # Output rows: a strong weight on the class dimension, random ones off the class dimensions.
    weights = model.lm_head.weight
    for token_class, ids in classes.items():
        rows = torch.randn(len(ids), weights.shape[1]) * 1.5
        rows[:, : len(classes)] = 0.0
        rows[:, token_class] = 8.0
        weights[ids] = rows


def build_florence2_trainable(
    directory: Path,
    corpus: list[str],
    seed: int = 0,
    image_size: int = 64,
    d_model: int = 64,
    layers: int = 1,
) -> Path:
    """Save a small randomly initialised Florence-2 for fine-tuning tests: no grammar bias
    (it writes noise until it is taught), a vocabulary learnt from ``corpus`` (the words of
    the training answers), decoder positions for the backend's longest answer."""
    tokenizer = bart_tokenizer([*CORPUS, *corpus])
    image_processor = CLIPImageProcessorPil(
        size={"height": image_size, "width": image_size},
        do_center_crop=False,
        image_seq_length=(image_size // 32) ** 2 + 1,
    )
    processor = Florence2Processor(
        image_processor, tokenizer, post_processor_config=POST_PROCESSOR_CONFIG
    )
    vision = dict(
        depths=[1, 1, 1, 1], embed_dim=[8, 16, 32, 64], num_heads=[1, 1, 2, 2],
        num_groups=[1, 1, 2, 2], window_size=2, projection_dim=d_model, drop_path_rate=0.0,
    )  # fmt: skip
    text = dict(
        model_type="bart", vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers,
        decoder_layers=layers, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
        max_position_embeddings=300,  # the backend's 256 new tokens, its start, BART's offset
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2,
    )  # fmt: skip
    config = Florence2Config(
        text_config=text, vision_config=vision, image_token_id=tokenizer.image_token_id
    )
    torch.manual_seed(seed)
    Florence2ForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
