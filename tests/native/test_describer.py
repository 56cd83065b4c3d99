"""The native describer: saved and loaded, decoded greedily and by beams, served by
``sceneloc.load(..., task="describe")``."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import sceneloc
from checkpoints.native_describer import build_native_describer
from sceneloc.backends.native_describer import NativeDescriberBackend
from sceneloc.native.describer import NativeDescriberModel
from sceneloc.registry import Capability, Task, resolve

BOXES = [[10, 10, 50, 60], [70, 20, 110, 70], [120, 50, 150, 80]]


@pytest.fixture(scope="module")
def describer_dir(tmp_path_factory):
    return build_native_describer(tmp_path_factory.mktemp("native-describer"))


@pytest.fixture(scope="module")
def backend(describer_dir):
    return NativeDescriberBackend.from_pretrained(
        str(describer_dir), torch.device("cpu"), torch.float32
    )


def memory_of(backend, scene, boxes):
    """The decoder's memory for ``boxes`` of ``scene``, as the backend builds it."""
    from sceneloc.native.processing import normalize, resize

    model, config = backend.model, backend.config
    pixels = torch.from_numpy(resize(scene, config.image_size))[None]
    tokens, grid = model.encode_image(normalize(pixels, config))
    scale = torch.tensor([scene.width, scene.height] * 2, dtype=torch.float32)
    normalized = torch.tensor(boxes, dtype=torch.float32) / scale
    return model.encode_regions(tokens, grid, normalized, torch.zeros(len(boxes), dtype=torch.long))


def mean_log_prob(model, memory, token_ids: list[int]) -> float:
    """The teacher-forced mean log-probability of ``token_ids`` then ``[EOS]``."""
    config = model.config
    ids = torch.tensor([[config.bos_token_id, *token_ids, config.eos_token_id]])
    logits = model.teacher_forced_logits(memory, ids[:, :-1])
    log_probs = logits.log_softmax(dim=-1)[0].gather(1, ids[0, 1:, None])
    return float(log_probs.mean())


def test_save_and_load_give_the_same_model(describer_dir, backend, scene, tmp_path):
    backend.model.save_pretrained(tmp_path)
    again = NativeDescriberModel.from_pretrained(tmp_path).eval()
    for name, tensor in backend.model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    saved, loaded = backend.model.config.to_dict(), again.config.to_dict()
    del saved["_name_or_path"], loaded["_name_or_path"]
    assert loaded == saved


def test_greedy_is_one_beam_and_scores_are_mean_log_probs(backend, scene):
    model = backend.model
    memory = memory_of(backend, scene, BOXES)
    with torch.no_grad():
        greedy = model.generate_captions(memory, num_beams=1, max_new_tokens=6)
        beams = model.generate_captions(memory, num_beams=3, max_new_tokens=6)
        for region, caption in enumerate(greedy):
            # Greedy: each word the most likely after the ones before it.
            one = memory_of(backend, scene, [BOXES[region]])
            ids = [model.config.bos_token_id]
            for _ in range(6):
                logits = model.teacher_forced_logits(one, torch.tensor([ids]))
                ids.append(int(logits[0, -1].argmax()))
                if ids[-1] == model.config.eos_token_id:
                    break
            said = [i for i in ids[1:] if i != model.config.eos_token_id]
            assert caption.token_ids == said
        for region, caption in enumerate(greedy + beams):
            one = memory_of(backend, scene, [BOXES[region % len(BOXES)]])
            if len(caption.token_ids) < 6:  # ended by [EOS], not by the length limit
                expected = mean_log_prob(model, one, caption.token_ids)
                assert caption.score == pytest.approx(expected, abs=1e-5)


def test_load_for_describe_gives_one_scored_caption_per_box(describer_dir, scene):
    describer = sceneloc.load(str(describer_dir), task="describe", device="cpu")
    answer = describer.describe(scene, BOXES, num_beams=2, max_new_tokens=5)
    assert [region.box for region in answer.regions] == [[float(v) for v in b] for b in BOXES]
    words = {"the", "red", "square", "leftmost", "green", "circle", "small", "blue", "triangle"}
    for region in answer.regions:
        assert set(region.caption.split()) <= words | {"[UNK]"}
        assert region.score is not None and region.score <= 0.0
    alone = [describer.describe(scene, [box], num_beams=2, max_new_tokens=5) for box in BOXES]
    assert [a.regions[0].caption for a in alone] == answer.captions


def test_registered_for_describe_only(describer_dir):
    resolved = resolve(str(describer_dir), Task.DESCRIBE)
    assert resolved.family.cls is NativeDescriberBackend
    assert {Capability.TRAINABLE, Capability.DENSE_CAPTIONS} <= resolved.family.capabilities
    with pytest.raises(sceneloc.errors.SceneLocError):
        sceneloc.load(str(describer_dir), task="locate", device="cpu")


def test_dense_mode_needs_an_object_map(tmp_path):
    """Only a describer trained on scenes that list their objects can find regions itself."""
    blind = sceneloc.load(
        str(build_native_describer(tmp_path / "blind", listed_objects=False)),
        task="describe",
        device="cpu",
    )
    with pytest.raises(sceneloc.errors.SceneLocError, match="no object map"):
        blind.describe(Image.new("RGB", (32, 32)))
    assert len(blind.describe(Image.new("RGB", (32, 32)), [[0, 0, 16, 16]])) == 1
