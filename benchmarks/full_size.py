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
    OmDetTurboConfig,
    OmDetTurboForObjectDetection,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2ImageProcessorPil,
    Owlv2Processor,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    RTDetrConfig,
    RTDetrForObjectDetection,
    RTDetrImageProcessorPil,
    Sam3Config,
    Sam3LiteTextConfig,
    Sam3LiteTextModel,
    Sam3Model,
    SwinConfig,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from checkpoints.clip import BOS, EOS, build_pipeline, clip_tokenizer, clip_vocabulary
from checkpoints.florence2 import POST_PROCESSOR_CONFIG, bart_tokenizer
from checkpoints.omdet_turbo import image_processor as omdet_image_processor
from checkpoints.qwen_vl import IM_END, qwen_tokenizer, special_ids
from checkpoints.sam3 import save_sam3
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
        post_processor_config=POST_PROCESSOR_CONFIG,
    )
    return _save(Florence2ForConditionalGeneration(config), processor, directory)


def clip_rerank(directory: Path) -> Path:
    """openai/clip-vit-base-patch32 ranking the proposals of RT-DETR R50-vd."""
    clip_dir, detector_dir = directory / "clip", directory / "detector"
    config = CLIPConfig(text_config=_clip_text_ids())
    _save(CLIPModel(config), CLIPProcessor(CLIPImageProcessorPil(), clip_tokenizer(77)), clip_dir)
    _save(RTDetrForObjectDetection(RTDetrConfig()), RTDetrImageProcessorPil(), detector_dir)
    return build_pipeline(directory, clip_dir, detector_dir)


def omdet_turbo(directory: Path) -> Path:
    """omlab/omdet-turbo-swin-tiny-hf's architecture (Swin-T at 640 px, CLIP B/16 text, 900
    queries), with transformers' Swin in place of timm's (same layers; timm does not load here)."""
    backbone = SwinConfig(
        embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
        image_size=640, out_indices=[2, 3, 4],
    )  # fmt: skip
    config = OmDetTurboConfig(backbone_config=backbone, apply_layernorm_after_vision_backbone=False)
    OmDetTurboForObjectDetection(config).eval().save_pretrained(directory)
    omdet_image_processor(640).save_pretrained(directory)
    clip_tokenizer(77).save_pretrained(directory)
    return directory


def sam3(directory: Path) -> Path:
    """facebook/sam3's image detector (ViT 1024 x 32 layers at 1008 px, CLIP text 1024 x 24,
    DETR 6 + 6 layers, 200 queries): Sam3Config's defaults."""
    return save_sam3(Sam3Model(Sam3Config()), directory, image_size=1008)


def sam3_lite(directory: Path) -> Path:
    """yonigozlan/sam3-litetext-s0: SAM 3's image side, a MobileCLIP-S0-sized text encoder."""
    config = Sam3LiteTextConfig(text_config={"num_hidden_layers": 6})
    return save_sam3(Sam3LiteTextModel(config), directory, image_size=1008)


def qwen3_vl_2b(directory: Path) -> Path:
    """Qwen/Qwen3-VL-2B-Instruct's architecture (ViT 24 x 1024 with deepstack at 5/11/17,
    Qwen3 28 x 2048); the tests' small tokenizer (its ids fit the vocabulary)."""
    tokenizer = qwen_tokenizer("qwen3_vl")
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
            num_attention_heads=16, num_key_value_heads=8, head_dim=128,
            max_position_embeddings=262144, pad_token_id=tokenizer.pad_token_id,
            rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                             "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        ),
        vision_config=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
                           out_hidden_size=2048, num_position_embeddings=2304,
                           deepstack_visual_indexes=[5, 11, 17]),
        **{**special_ids(tokenizer), "tie_word_embeddings": True},
    )  # fmt: skip
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(IM_END)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval().save_pretrained(directory)
    Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        size={"shortest_edge": 65536, "longest_edge": 16777216},
    ).save_pretrained(directory)  # fmt: skip
    tokenizer.save_pretrained(directory)
    return directory
