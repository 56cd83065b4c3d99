"""Picking a backend from a short name, a hub id or a local directory."""

from __future__ import annotations

import json

import pytest

import sceneloc
from sceneloc.registry import list_backends, list_models, resolve


def test_every_issue_model_is_registered():
    names = {m.name for m in list_models()}
    assert {
        "grounding-dino-tiny", "grounding-dino-base", "mm-grounding-dino-tiny", "owlv2-base",
        "florence-2-base", "florence-2-large", "clip-rerank",
    } <= names  # fmt: skip
    backends = {b.name for b in list_backends()}
    assert {m.backend for m in list_models()} <= backends


def test_short_name_maps_to_hub_id():
    backend, checkpoint = resolve("grounding-dino-tiny")
    assert backend.name == "grounding-dino"
    assert checkpoint == "IDEA-Research/grounding-dino-tiny"


def test_local_directory_is_picked_by_model_type(grounding_dino_dir, mm_grounding_dino_dir):
    for directory in (grounding_dino_dir, mm_grounding_dino_dir):
        backend, checkpoint = resolve(str(directory))
        assert backend.name == "grounding-dino" and checkpoint == str(directory)


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(sceneloc.UnsupportedModelError, match="bert"):
        sceneloc.load(str(tmp_path))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("/no/such/dir", "not found"),
        ("./missing-model", "not found"),
        ("grounding-dino-tni", "did you mean grounding-dino-tiny"),
    ],
)
def test_missing_models_fail_fast_with_a_hint(name, message):
    with pytest.raises(sceneloc.ModelNotFoundError, match=message):
        sceneloc.load(name)


def test_directory_without_config(tmp_path):
    with pytest.raises(sceneloc.ModelNotFoundError, match=r"config\.json"):
        sceneloc.load(str(tmp_path))
