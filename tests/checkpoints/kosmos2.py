"""A tiny randomly initialised Kosmos-2 checkpoint on disk, built offline.

Random weights would write garbage, so the decoder is biased to follow Kosmos-2's grounding
grammar, one token class after another: after ``</phrase>`` a box (``<object>``, a patch
index of the upper half of the grid, one of the lower half, ``</object>``) and the end; after
the region prompt's last word ``is`` two words and the end. The class of the next token is
carried, untouched by the layer, in the first dimensions of each token's embedding; which
token of the class comes next the attention decides, made to look at the prompt's patch
indices and words, so boxes depend on the query, captions on the box, and their tokens
are scored below 1.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessorPil,
    Kosmos2Config,
    Kosmos2ForConditionalGeneration,
    Kosmos2Processor,
    XLMRobertaTokenizer,
)

SPECIAL = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0-3, as in XLM-RoBERTa
#: Whole words of the vocabulary (with SentencePiece's word-start mark), then single letters.
WORDS = [
    "It", "is", "a", "an", "the", "of", "in", "on", "left", "right", "red", "green", "blue",
    "square", "circle", "triangle", "dog", "cat", "man", "woman", "snowman", "fire", "hat",
    "shape", "small", "big", "bright", "dark", "image", "picture",
]  # fmt: skip
IMAGE_SIZE = 28  # two 14-pixel patches a side
D_MODEL = 32
#: Token classes: what comes next after a token of each kind.
END, OBJECT, LOW_PATCH, HIGH_PATCH, CLOSE, FIRST_WORD, SECOND_WORD = range(7)


def xlm_roberta_tokenizer() -> XLMRobertaTokenizer:
    """A small SentencePiece-style (Unigram) vocabulary with XLM-RoBERTa's special tokens:
    whole words first, single letters to spell the rest."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = [(token, 0.0) for token in SPECIAL]
    pieces += [(f"▁{word}", -2.0) for word in WORDS]
    pieces += [(f"▁{c}", -8.0) for c in letters] + [(c, -9.0) for c in letters + list(".,")]
    pieces += [("▁", -10.0), ("<mask>", 0.0)]
    return XLMRobertaTokenizer(vocab=pieces)


def build_kosmos2(directory: Path, seed: int = 0) -> Path:
    """Save a tiny Kosmos-2 (CLIP-like vision tower, latent-query projection, decoder) with
    its processor; deterministic for a seed."""
    image_processor = CLIPImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False
    )
    processor = Kosmos2Processor(image_processor, xlm_roberta_tokenizer())  # adds tag tokens
    tokenizer = processor.tokenizer
    text = dict(
        vocab_size=len(tokenizer), embed_dim=D_MODEL, layers=1, ffn_dim=64, attention_heads=2,
        max_position_embeddings=256, dropout=0.0, attention_dropout=0.0,
        tie_word_embeddings=False,
    )  # fmt: skip
    vision = dict(
        hidden_size=D_MODEL, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=14,
    )  # fmt: skip
    config = Kosmos2Config(
        text_config=text,
        vision_config=vision,
        latent_query_num=processor.num_image_tokens,
        tie_word_embeddings=False,  # lets the output layer be set apart from the inputs
    )
    torch.manual_seed(seed)
    model = Kosmos2ForConditionalGeneration(config).eval()
    _speak_grounding_grammar(model, tokenizer)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@torch.no_grad()
def _speak_grounding_grammar(model: Kosmos2ForConditionalGeneration, tokenizer) -> None:
    """Bias the decoder so that each token's successor is of the class the grammar says."""
    ids = tokenizer.convert_tokens_to_ids
    patches = ids([f"<patch_index_{i:04d}>" for i in range(1024)])
    words = [ids(f"▁{w}") for w in WORDS if w not in ("It", "is")]
    first_words, second_words = words[: len(words) // 2], words[len(words) // 2 :]
    classes = {  # the tokens of each class
        END: [tokenizer.eos_token_id],
        OBJECT: [ids("<object>")],
        LOW_PATCH: patches[:512],  # upper-left corner above the lower-right: boxes with an area
        HIGH_PATCH: patches[512:],
        CLOSE: [ids("</object>")],
        FIRST_WORD: first_words,
        SECOND_WORD: second_words,
    }
    successor = dict.fromkeys(range(len(tokenizer)), END)  # what comes after each token
    successor |= {ids("</phrase>"): OBJECT, ids("<object>"): LOW_PATCH, ids("▁is"): FIRST_WORD}
    successor |= dict.fromkeys(patches[:512], HIGH_PATCH) | dict.fromkeys(patches[512:], CLOSE)
    successor |= dict.fromkeys(first_words, SECOND_WORD)
    n = len(classes)
    salience = n  # the dimension after the classes marks the tokens the attention looks at
    text_model = model.text_model
    # Input rows: dimension c marks "a token of class c comes next"; the rest is random.
    embeddings = text_model.model.embed_tokens.weight
    embeddings.normal_()
    embeddings[:, : n + 1] = 0.0
    for token, token_class in successor.items():
        embeddings[token, token_class] = 10.0
    embeddings[patches, salience] = 10.0  # a region's patch indices most, then the words
    embeddings[words + ids(["▁It", "▁is"]), salience] = 5.0
    # Every query looks at the salient tokens (a constant query against their salience), and
    # what it reads there counts; the layer writes nothing into the class and salience
    # dimensions, so they reach the output intact.
    attention = text_model.model.layers[0].self_attn
    for projection in (attention.q_proj, attention.k_proj):
        projection.weight.normal_(0.0, 0.05)
    attention.q_proj.bias.fill_(2.0)
    attention.k_proj.weight[:, salience] = 2.0
    attention.out_proj.weight.normal_(0.0, 6.0 / D_MODEL**0.5)
    for writer in (attention.out_proj, text_model.model.layers[0].ffn.fc2):
        writer.weight[: n + 1] = 0.0
        writer.bias[: n + 1] = 0.0
    # Output rows: a strong weight on the class dimension, random ones off the class dimensions.
    weights = text_model.lm_head.weight
    weights[:, :n] = -4.0  # tokens of no class are never written
    for token_class, members in classes.items():
        rows = torch.randn(len(members), weights.shape[1]) * 1.5
        rows[:, :n] = 0.0
        rows[:, token_class] = 8.0
        weights[members] = rows
