"""Shared fixtures: test images and tiny checkpoints built on disk (no network)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def draw_scene(width: int = 160, height: int = 96) -> Image.Image:
    """A small non-square scene with a few coloured shapes."""
    image = Image.new("RGB", (width, height), (200, 190, 170))
    draw = ImageDraw.Draw(image)
    draw.rectangle([10, 10, 50, 60], fill=(200, 30, 30))
    draw.ellipse([70, 20, 110, 70], fill=(30, 160, 40))
    draw.polygon([(120, 80), (150, 80), (135, 50)], fill=(40, 60, 200))
    return image


@pytest.fixture(scope="session")
def scene() -> Image.Image:
    return draw_scene()


@pytest.fixture(scope="session")
def grounding_dino_dir(tmp_path_factory) -> Path:
    from checkpoints.grounding_dino import build_grounding_dino

    return build_grounding_dino(tmp_path_factory.mktemp("grounding-dino"))


@pytest.fixture(scope="session")
def mm_grounding_dino_dir(tmp_path_factory) -> Path:
    from checkpoints.grounding_dino import build_grounding_dino

    return build_grounding_dino(tmp_path_factory.mktemp("mm-grounding-dino"), mm=True)


@pytest.fixture(scope="session")
def owlv2_dir(tmp_path_factory) -> Path:
    from checkpoints.owlv2 import build_owlv2

    return build_owlv2(tmp_path_factory.mktemp("owlv2"))


@pytest.fixture(scope="session")
def florence2_dir(tmp_path_factory) -> Path:
    from checkpoints.florence2 import build_florence2

    return build_florence2(tmp_path_factory.mktemp("florence-2"))


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    from checkpoints.clip import build_clip

    return build_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def detector_dir(tmp_path_factory) -> Path:
    from checkpoints.clip import build_rt_detr

    return build_rt_detr(tmp_path_factory.mktemp("rt-detr"))


@pytest.fixture(scope="session")
def sam3_dir(tmp_path_factory) -> Path:
    from checkpoints.sam3 import build_sam3

    return build_sam3(tmp_path_factory.mktemp("sam3"))


@pytest.fixture(scope="session")
def sam3_lite_dir(tmp_path_factory) -> Path:
    from checkpoints.sam3 import build_sam3

    return build_sam3(tmp_path_factory.mktemp("sam3-lite"), lite=True)


@pytest.fixture(scope="session")
def qwen3_vl_dir(tmp_path_factory) -> Path:
    from checkpoints.qwen_vl import build_qwen3_vl

    return build_qwen3_vl(tmp_path_factory.mktemp("qwen3-vl"))


@pytest.fixture(scope="session")
def qwen2_5_vl_dir(tmp_path_factory) -> Path:
    from checkpoints.qwen_vl import build_qwen2_5_vl

    return build_qwen2_5_vl(tmp_path_factory.mktemp("qwen2.5-vl"))


@pytest.fixture(scope="session")
def omdet_turbo_dir(tmp_path_factory) -> Path:
    from checkpoints.omdet_turbo import build_omdet_turbo

    return build_omdet_turbo(tmp_path_factory.mktemp("omdet-turbo"))


@pytest.fixture(scope="session")
def kosmos2_dir(tmp_path_factory) -> Path:
    from checkpoints.kosmos2 import build_kosmos2

    return build_kosmos2(tmp_path_factory.mktemp("kosmos-2"))
