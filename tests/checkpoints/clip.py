"""Randomly initialised CLIP and RT-DETR checkpoints on disk, and a tiny CLIP BPE vocabulary.

The vocabulary is written by hand (the 256 byte symbols, alone and word-final, merges that
spell out the words the tests use, then the two special tokens with the highest ids, as in
CLIP's own) so that CLIPTokenizer loads it offline; OWLv2 shares it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    RTDetrConfig,
    RTDetrForObjectDetection,
    RTDetrImageProcessorPil,
    RTDetrResNetConfig,
)

WORDS = (
    "a", "the", "of", "left", "right", "red", "green", "blue", "square", "circle", "triangle",
    "object", "number", "photo",
)  # fmt: skip
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def clip_vocabulary(
    words: tuple[str, ...] = WORDS,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary with a merge path for each of ``words``."""
    alphabet = sorted(ByteLevel.alphabet())  # '!' first, id 0, as in CLIP's vocabulary
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merge, merged = (pieces[0], pieces[1]), pieces[0] + pieces[1]
            if merge not in merges:
                merges.append(merge)
                tokens.append(merged)
            pieces = [merged, *pieces[2:]]
    tokens += [BOS, EOS]
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}, merges


def clip_tokenizer(max_length: int, pad_token: str = EOS) -> CLIPTokenizer:
    vocab, merges = clip_vocabulary()
    return CLIPTokenizer(
        vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=max_length
    )


def text_config(max_length: int) -> dict:
    """A one-layer text tower over :func:`clip_vocabulary`, pooling at the real end token."""
    vocab, _ = clip_vocabulary()
    return dict(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=max_length, bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS], pad_token_id=vocab[EOS],
    )  # fmt: skip


def build_clip(directory: Path, seed: int = 0) -> Path:
    """Save a tiny CLIP (32 px images) with its processor."""
    vision = dict(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2,
    )  # fmt: skip
    config = CLIPConfig(text_config=text_config(77), vision_config=vision, projection_dim=32)
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(directory)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    CLIPProcessor(image_processor, clip_tokenizer(77)).save_pretrained(directory)
    return directory


def build_rt_detr(directory: Path, seed: int = 0) -> Path:
    """Save a tiny RT-DETR (64 px images, 20 queries, 3 classes) with its image processor."""
    backbone = RTDetrResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = RTDetrConfig(
        backbone_config=backbone, encoder_hidden_dim=16, encoder_in_channels=[16, 32, 64],
        encoder_ffn_dim=32, encoder_attention_heads=2, d_model=16, decoder_in_channels=[16, 16, 16],
        decoder_ffn_dim=32, decoder_layers=1, decoder_attention_heads=2, decoder_n_points=2,
        num_queries=20, num_denoising=0, num_labels=3,
        initializer_range=0.3,  # the default 0.01 gives every query the same box and score
    )  # fmt: skip
    torch.manual_seed(seed)
    RTDetrForObjectDetection(config).eval().save_pretrained(directory)
    RTDetrImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(directory)
    return directory


def build_pipeline(directory: Path, clip: Path, detector: Path, **settings) -> Path:
    """Save a ``sceneloc-clip-rerank`` directory naming ``clip`` and ``detector``.

    Paths inside ``directory`` are written relative to it, as a user would.
    """
    directory.mkdir(parents=True, exist_ok=True)

    def name(path: Path) -> str:
        return str(path.relative_to(directory)) if path.is_relative_to(directory) else str(path)

    config = {
        "model_type": "sceneloc-clip-rerank",
        "clip": name(clip),
        "detector": name(detector),
        **settings,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory
