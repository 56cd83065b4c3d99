"""Full-size architectures with random weights, built offline, for speed measurements.

The hub is out of reach here, and random weights cost the same time as trained ones. The
configurations are those of the released checkpoints; tokenizers are the small offline
ones the tests use (token ids fit the full vocabularies).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessor,
    GroundingDinoProcessor,
    MMGroundingDinoConfig,
    MMGroundingDinoForObjectDetection,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2ImageProcessorPil,
    Owlv2Processor,
    RTDetrConfig,
    RTDetrForObjectDetection,
    RTDetrImageProcessorPil,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from checkpoints.clip import BOS, EOS, build_pipeline, clip_tokenizer, clip_vocabulary
from checkpoints.florence2 import bart_tokenizer
from checkpoints.wordpiece import bert_tokenizer


def _save(model: torch.nn.Module, processor, directory: Path) -> Path:
    model.eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _clip_text_ids() -> dict[str, int]:
    vocab, _ = clip_vocabulary()
    return {"bos_token_id": vocab[BOS], "eos_token_id": vocab[EOS], "pad_token_id": vocab[EOS]}


def grounding_dino(directory: Path) -> Path:
    """IDEA-Research/grounding-dino-tiny's architecture (Swin-T, BERT-base)."""
    processor = GroundingDinoProcessor(GroundingDinoImageProcessor(), bert_tokenizer())
    return _save(GroundingDinoForObjectDetection(GroundingDinoConfig()), processor, directory)


def mm_grounding_dino(directory: Path) -> Path:
    processor = GroundingDinoProcessor(GroundingDinoImageProcessor(), bert_tokenizer())
    return _save(MMGroundingDinoForObjectDetection(MMGroundingDinoConfig()), processor, directory)


def owlv2(directory: Path) -> Path:
    """google/owlv2-base-patch16-ensemble's architecture (ViT-B/16 at 960 px)."""
    config = Owlv2Config(
        text_config={**_clip_text_ids(), "max_position_embeddings": 16},
        vision_config={"image_size": 960, "patch_size": 16},
    )
    tokenizer = clip_tokenizer(16, pad_token="!")
    processor = Owlv2Processor(Owlv2ImageProcessorPil(), tokenizer)
    return _save(Owlv2ForObjectDetection(config), processor, directory)


def florence2(directory: Path) -> Path:
    """Florence-2-base's architecture (DaViT, BART 6+6 layers of 768) at 768 px."""
    tokenizer = bart_tokenizer()
    text = dict(
        model_type="bart", vocab_size=51289, d_model=768, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
        decoder_ffn_dim=3072, bos_token_id=0, pad_token_id=1, eos_token_id=2,
        decoder_start_token_id=2,
    )  # fmt: skip
    config = Florence2Config(
        text_config=text,
        vision_config={"projection_dim": 768},
        image_token_id=tokenizer.image_token_id,
    )
    image_processor = CLIPImageProcessorPil(
        size={"height": 768, "width": 768}, do_center_crop=False, image_seq_length=577
    )
    processor = Florence2Processor(
        image_processor,
        tokenizer,
        post_processor_config={"phrase_grounding": {"banned_grounding_tokens": ["the image"]}},
    )
    return _save(Florence2ForConditionalGeneration(config), processor, directory)


def clip_rerank(directory: Path) -> Path:
    """openai/clip-vit-base-patch32 ranking the proposals of RT-DETR R50-vd."""
    clip_dir, detector_dir = directory / "clip", directory / "detector"
    config = CLIPConfig(text_config=_clip_text_ids())
    _save(CLIPModel(config), CLIPProcessor(CLIPImageProcessorPil(), clip_tokenizer(77)), clip_dir)
    _save(RTDetrForObjectDetection(RTDetrConfig()), RTDetrImageProcessorPil(), detector_dir)
    return build_pipeline(directory, clip_dir, detector_dir)
