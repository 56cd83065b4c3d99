"""Fine-tuning the CLIP re-ranker's head on tiny checkpoints: labels, training, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import sceneloc
from sceneloc.api import Grounder
from sceneloc.backends.clip_head import ClipRerankHead
from sceneloc.boxes import iou_matrix
from sceneloc.evaluation import evaluate_model
from sceneloc.training.finetune.clip_rerank import (
    MAX_NEGATIVES,
    ClipRerankRecipe,
    choose_pairs,
    label_proposals,
)
from sceneloc.training.finetune.options import FinetuneOptions
from sceneloc.training.finetune.recipe import FinetuneItem
from sceneloc.training.options import TrainingError

COLORS = {"red": (220, 40, 40), "green": (40, 165, 65), "blue": (40, 85, 225)}
SIDE = 96


def test_labels_by_iou_with_the_targets():
    target = np.array([[0.0, 0.0, 10.0, 10.0]], dtype=np.float32)
    proposals = np.array(
        [
            [0.0, 0.0, 10.0, 10.0],  # the target: IoU 1
            [0.0, 0.0, 10.0, 5.0],  # IoU exactly 0.5: a positive
            [0.0, 0.0, 10.0, 4.9],  # IoU 0.49: a negative
            [20.0, 20.0, 30.0, 30.0],  # apart
        ],
        dtype=np.float32,
    )
    assert label_proposals(proposals, target).tolist() == [1.0, 1.0, 0.0, 0.0]
    # Several targets: the best overlap counts.
    two = np.concatenate([target, [[20.0, 20.0, 30.0, 31.0]]]).astype(np.float32)
    assert label_proposals(proposals, two).tolist() == [1.0, 1.0, 0.0, 1.0]
    # An absent referent: every proposal is a negative.
    assert label_proposals(proposals, np.zeros((0, 4), np.float32)).tolist() == [0.0] * 4


def test_every_positive_and_the_hardest_negatives():
    labels = np.array([0, 1, 0, 0, 1, 0], dtype=np.float32)
    similarity = np.array([0.1, -0.5, 0.9, 0.3, 0.0, 0.5], dtype=np.float32)
    assert choose_pairs(labels, similarity).tolist() == [1, 4, 2, 5, 3, 0]
    assert choose_pairs(labels, similarity, max_negatives=2).tolist() == [1, 4, 2, 5]
    many = np.zeros(MAX_NEGATIVES + 10, dtype=np.float32)
    assert len(choose_pairs(many, np.arange(len(many), dtype=np.float32))) == MAX_NEGATIVES


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, clip_dir, detector_dir):
    """The tiny CLIP and RT-DETR as a pipeline directory (all their proposals kept)."""
    from checkpoints.clip import build_pipeline

    directory = tmp_path_factory.mktemp("pipeline")
    return build_pipeline(
        directory, clip=clip_dir, detector=detector_dir, max_proposals=20, detector_threshold=0.0
    )


@pytest.fixture(scope="module")
def samples(tmp_path_factory, pipeline):
    """Eight images with a red, a green and a blue square; each query's target is the
    detector's proposal that best covers its square, so that the re-ranker can find it."""
    root = tmp_path_factory.mktemp("squares")
    backend = sceneloc.load(str(pipeline), device="cpu").backend
    rng = np.random.default_rng(0)
    rows = []
    for index in range(8):
        image = Image.new("RGB", (SIDE, SIDE), (128, 128, 128))
        draw = ImageDraw.Draw(image)
        squares = {}
        for name, fill in COLORS.items():
            x, y, width = (int(v) for v in (*rng.integers(0, 60, 2), rng.integers(20, 36)))
            squares[name] = [x, y, min(SIDE, x + width), min(SIDE, y + width)]
            draw.rectangle(squares[name], fill=fill)
        image.save(root / f"{index}.png")
        proposals = backend.propose(image).clamp(0, SIDE).numpy()
        for name, square in squares.items():
            best = proposals[iou_matrix(proposals, np.array([square], np.float32)).argmax()]
            rows.append({"id": f"{index}_{name}", "image": f"{index}.png",
                         "query": f"the {name} square", "box": best.tolist(),
                         "split": "train"})  # fmt: skip
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, pipeline, samples):
    out = tmp_path_factory.mktemp("run") / "out"
    return sceneloc.finetune(str(pipeline), samples, out, val=samples, epochs=30, lr=1e-2,
                             batch_size=4)  # fmt: skip


def test_the_head_beats_plain_similarity_on_its_training_images(pipeline, samples, run):
    plain = evaluate_model(str(samples), sceneloc.load(str(pipeline), device="cpu"), threshold=0.0)
    # The fresh head ranks as similarity does: the figure before is plain similarity's.
    assert run.before["acc@0.5"] == pytest.approx(plain.to_dict()["acc@0.5"])
    assert run.after["acc@0.5"] >= run.before["acc@0.5"] + 0.3
    tuned = evaluate_model(str(samples), sceneloc.load(str(run.best), device="cpu"), threshold=0.0)
    assert tuned.to_dict()["acc@0.5"] == pytest.approx(run.after["acc@0.5"])


def test_checkpoints_are_pipelines_with_the_head(pipeline, clip_dir, detector_dir, run):
    for directory in (run.best, run.last):
        config = json.loads((directory / "config.json").read_text())
        assert config == {
            "model_type": "sceneloc-clip-rerank", "clip": str(clip_dir.resolve()),
            "detector": str(detector_dir.resolve()), "head": "head", "max_proposals": 20,
            "detector_threshold": 0.0,
        }  # fmt: skip
        assert (directory / "head" / "model.safetensors").is_file()
        grounder = sceneloc.load(str(directory), device="cpu")
        assert isinstance(grounder.backend.head, ClipRerankHead)
    report = json.loads(run.report.read_text())
    assert report["after"]["acc@0.5"] > report["before"]["acc@0.5"]


def test_saved_head_gives_the_scores_of_the_model_in_memory(tmp_path, pipeline, samples):
    """Save then load: the same scores as the head trained in memory."""
    options = FinetuneOptions.build(model=str(pipeline), data=str(samples), out=str(tmp_path))
    recipe = ClipRerankRecipe(options)
    model = recipe.load(str(pipeline))
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.normal_(0.0, 0.1)
    recipe.save(model, tmp_path / "saved")
    image = Image.open(samples.parent / "0.png")
    queries = list(f"the {name} square" for name in COLORS)
    in_memory = Grounder(recipe.backend(model), "memory")
    loaded = sceneloc.load(str(tmp_path / "saved"), device="cpu")
    for got, want in zip(
        loaded.locate(image, queries, threshold=0.0, top_k=100),
        in_memory.locate(image, queries, threshold=0.0, top_k=100),
    ):
        assert len(got.candidates) > 10  # every proposal
        assert got.candidates.boxes.tolist() == want.candidates.boxes.tolist()
        assert got.candidates.scores.tolist() == want.candidates.scores.tolist()


def test_training_items_hold_the_targets_as_positives(tmp_path, pipeline, samples):
    options = FinetuneOptions.build(model=str(pipeline), data=str(samples), out=str(tmp_path),
                                    augment=False)  # fmt: skip
    task = options.make_task()
    task.prepare()
    model = task.build_model(None)
    items = task.dataset()
    assert len(items) == 24
    for item in items.items:  # each query's target, and the proposal that it is
        assert item.labels.sum() >= 2
        assert item.labels[0] == 1.0  # positives first
        assert 2 <= len(item.labels) <= 2 + 20
    # CLIP and the detector stay frozen: only the head learns.
    learning = {name for name, p in model.named_parameters() if p.requires_grad}
    assert learning and all(name.startswith("head.") for name in learning)


def test_an_absent_referent_gives_negatives_only(tmp_path, pipeline, samples):
    options = FinetuneOptions.build(model=str(pipeline), data=str(samples), out=str(tmp_path))
    recipe = ClipRerankRecipe(options)
    model = recipe.load(str(pipeline))
    image = Image.open(samples.parent / "0.png").convert("RGB")
    absent = FinetuneItem(image, "the purple star", np.zeros((0, 4), np.float32))
    (item,) = recipe.training_items(model, [absent]).items
    assert len(item.labels) > 10 and item.labels.sum() == 0


def test_lora_is_refused(tmp_path, pipeline, samples):
    with pytest.raises(TrainingError, match="LoRA does not apply"):
        sceneloc.finetune(str(pipeline), samples, tmp_path / "out", lora_rank=4)
