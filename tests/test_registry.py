"""Picking a backend from a short name, a hub id or a local directory, and a task."""

from __future__ import annotations

import json
from enum import Enum

import pytest
from typer.testing import CliRunner

import sceneloc
from sceneloc import registry
from sceneloc.backends.base import Backend
from sceneloc.cli import app
from sceneloc.registry import (
    Capability,
    Model,
    ModelSettings,
    list_backends,
    list_models,
    register_backend,
    resolve,
)


def test_every_issue_model_is_registered():
    names = {m.name for m in list_models()}
    assert {
        "grounding-dino-tiny", "grounding-dino-base", "mm-grounding-dino-tiny", "owlv2-base",
        "florence-2-base", "florence-2-large", "clip-rerank",
    } <= names  # fmt: skip
    assert {m.family for m in list_models()} <= set(list_backends())


def test_each_task_has_a_registered_default_for_each_kind_of_device():
    for task in registry.Task:
        for kind in registry.DEVICE_KINDS:
            name = registry.DEFAULT_MODELS[task][kind]
            assert name in {m.name for m in list_models(task)}
    on_cpu, on_gpu = (registry.DEFAULT_MODELS[registry.Task.LOCATE][k] for k in ("cpu", "gpu"))
    assert registry.default_model("locate", "cpu") == on_cpu
    assert registry.default_model("locate", "cuda:1") == registry.default_model("locate", "mps")
    assert registry.default_model("locate", "cuda") == on_gpu


def test_short_name_maps_to_hub_id():
    found = resolve("grounding-dino-tiny")
    assert found.family.name == "grounding-dino"
    assert found.checkpoint == "IDEA-Research/grounding-dino-tiny"
    assert found.settings.default_threshold == 0.25


def test_local_directory_is_picked_by_model_type(grounding_dino_dir, mm_grounding_dino_dir):
    for directory in (grounding_dino_dir, mm_grounding_dino_dir):
        found = resolve(str(directory), task="locate")
        assert found.family.name == "grounding-dino" and found.checkpoint == str(directory)


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(sceneloc.UnsupportedModelError, match="bert"):
        sceneloc.load(str(tmp_path))


def test_unknown_task():
    with pytest.raises(sceneloc.SceneLocError, match="unknown task 'translate'"):
        resolve("grounding-dino-tiny", task="translate")


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


@pytest.fixture
def scratch_registry(monkeypatch) -> None:
    """The registry as it is, with whatever a test registers removed afterwards."""
    list_backends()  # the real backends register before the copies are made
    for table in ("_FAMILIES", "_MODELS", "_DISPATCH"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))


@pytest.fixture
def describe(scratch_registry, monkeypatch) -> Enum:
    """A second task, ``describe``, known to the scratch registry."""
    tasks = Enum("Task", {"LOCATE": "locate", "DESCRIBE": "describe"}, type=str)
    monkeypatch.setattr(registry, "Task", tasks)
    return tasks.DESCRIBE


class Toy(Backend):
    """Never built: the registry only stores and dispatches to the class."""

    @classmethod
    def from_pretrained(cls, checkpoint, device, dtype, **options):
        raise NotImplementedError

    def predict(self, image, queries, threshold):
        raise NotImplementedError


def test_one_family_serving_two_tasks_is_one_entry(describe, tmp_path):
    register_backend(
        "toy",
        tasks=[registry.Task.LOCATE, describe],
        model_types=("toy",),
        capabilities=[Capability.PHRASE_LABELS],
        settings=ModelSettings(default_threshold=0.4),
        models=[Model("toy-small", "someone/toy-small", "a toy", ModelSettings(0.7, False))],
    )(Toy)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "toy"}))

    assert [f.name for f in list_backends()].count("toy") == 1
    for task in (registry.Task.LOCATE, describe):
        by_name, by_path = resolve("toy-small", task), resolve(str(tmp_path), task)
        assert by_name.family is by_path.family is Toy.family
        assert by_name.settings == ModelSettings(0.7, False)  # the model's own settings
        assert by_path.settings == ModelSettings(0.4, True)  # the family's
    assert "toy-small" in {m.name for m in list_models("locate")}


def test_model_that_does_not_serve_the_task(describe, tmp_path):
    register_backend(
        "captioner",
        tasks=[describe],
        model_types=("captioner",),
        settings=ModelSettings(default_threshold=0.0),
        models=[Model("captioner-base", "someone/captioner", "describes regions")],
    )(Toy)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "captioner"}))
    for name in ("captioner-base", str(tmp_path)):
        with pytest.raises(sceneloc.TaskNotSupportedError, match="does describe but not locate"):
            sceneloc.load(name)
    assert resolve("captioner-base", describe).family.name == "captioner"
    assert "captioner-base" not in {m.name for m in list_models("locate")}


def test_two_families_cannot_claim_the_same_checkpoints(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        register_backend(
            "impostor",
            tasks=[registry.Task.LOCATE],
            model_types=("owlv2",),
            settings=ModelSettings(default_threshold=0.1),
        )(Toy)


def test_models_command_lists_tasks_and_the_default():
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    for kind, name in registry.DEFAULT_MODELS[registry.Task.LOCATE].items():
        marked = [row for row in rows if row.startswith(f"{name} (default for")]
        assert marked and f"locate on a {kind.upper()}" in marked[0], (name, list(rows))
    owlv2 = [cell.strip() for cell in rows["owlv2-base"].split("│")]
    assert owlv2[2] == "locate"
    assert "image encoded once per call" in owlv2[5]


def test_a_gated_hub_model_says_how_to_get_it(monkeypatch):
    from transformers import PretrainedConfig

    def gated(checkpoint, **_):
        # What transformers raises for a gated repository the user has no access to.
        raise OSError(
            "You are trying to access a gated repo.\nMake sure to have access to it at "
            f"https://huggingface.co/{checkpoint}."
        )

    monkeypatch.setattr(PretrainedConfig, "get_config_dict", gated)
    with pytest.raises(sceneloc.ModelNotFoundError, match=r"gated.*accept its licence.*hf auth"):
        resolve("someone/gated-grounder")
