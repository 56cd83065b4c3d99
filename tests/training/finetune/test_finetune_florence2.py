"""Fine-tuning Florence-2: the loss it trains on, what it is taught to write, what it learns,
and the checkpoints it leaves (plain transformers, LoRA merged and not)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from PIL import Image, ImageDraw
from transformers import AutoProcessor, Florence2ForConditionalGeneration

import sceneloc
from checkpoints.florence2 import build_florence2_trainable
from sceneloc.api import Grounder
from sceneloc.backends.florence2 import GROUNDING, Florence2Backend
from sceneloc.evaluation import evaluate_model
from sceneloc.training.finetune.florence2 import Florence2Recipe
from sceneloc.training.finetune.options import FinetuneOptions
from sceneloc.training.finetune.recipe import FinetuneItem
from sceneloc.training.options import TrainingError

COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 180, 60),
           "yellow": (230, 210, 40)}  # fmt: skip
QUERIES = [f"the {colour} shape" for colour in COLOURS]
SIZE = (128, 96)
#: Each query is seen this many times an epoch (one pass over eight queries is one step).
REPEATS = 80
#: How the tests teach a random model from scratch: its random vision tower has nothing
#: worth keeping, so it learns too (the recipe freezes it by default).
TEACH = dict(epochs=4, batch_size=8, lr=1e-3, freeze="none", augment=False,
             lr_schedule="stable-decay", warmup_fraction=0.1)  # fmt: skip


def write_shapes(folder, images: int = 4, seed: int = 0) -> list[dict]:
    """Images of two large shapes of two colours, one in each half; a query per shape by its
    colour (so the answer depends on the query as well as on the image)."""
    rng = random.Random(seed)
    rows = []
    for index in range(images):
        image = Image.new("RGB", SIZE, (128, 128, 128))
        draw = ImageDraw.Draw(image)
        colours = rng.sample(list(COLOURS), 2)
        boxes = [
            [rng.randint(2, 12), rng.randint(2, 20), rng.randint(52, 62), rng.randint(70, 94)],
            [rng.randint(66, 76), rng.randint(2, 20), rng.randint(116, 126), rng.randint(70, 94)],
        ]
        for colour, box in zip(colours, boxes):
            draw.rectangle(box, fill=COLOURS[colour])
        image.save(folder / f"{index}.png")
        rows += [{"id": f"{index}-{colour}", "image": f"{index}.png",
                  "query": f"the {colour} shape", "box": box, "split": "train"}
                 for colour, box in zip(colours, boxes)]  # fmt: skip
    return rows


def write_lines(path, rows: list[dict], repeats: int = 1) -> None:
    repeated = [{**row, "id": f"{row['id']}-{k}"} for k in range(repeats) for row in rows]
    path.write_text("".join(json.dumps(row) + "\n" for row in repeated))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """``val.jsonl``: each query once; ``train.jsonl``: each query ``REPEATS`` times (an
    epoch is many steps, and validation runs once an epoch)."""
    folder = tmp_path_factory.mktemp("shapes")
    rows = write_shapes(folder)
    write_lines(folder / "val.jsonl", rows)
    write_lines(folder / "train.jsonl", rows, REPEATS)
    return folder


@pytest.fixture(scope="module")
def regions(tmp_path_factory):
    """Describe data: an image per colour, its shape's region captioned by its colour."""
    folder = tmp_path_factory.mktemp("regions")
    rng = random.Random(1)
    rows = []
    for index, (colour, fill) in enumerate(COLOURS.items()):
        image = Image.new("RGB", SIZE, (128, 128, 128))
        box = [rng.randint(2, 40), rng.randint(2, 30), rng.randint(80, 126), rng.randint(60, 94)]
        ImageDraw.Draw(image).rectangle(box, fill=fill)
        image.save(folder / f"{index}.png")
        rows.append({"id": str(index), "image": f"{index}.png", "query": f"the {colour} shape",
                     "box": box, "split": "train"})  # fmt: skip
    write_lines(folder / "val.jsonl", rows)
    write_lines(folder / "train.jsonl", rows, 2 * REPEATS)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_florence2_trainable(tmp_path_factory.mktemp("florence-2-trainable"), QUERIES,
                                     layers=2)  # fmt: skip


@pytest.fixture(scope="module")
def items(shapes) -> list[FinetuneItem]:
    rows = [json.loads(line) for line in (shapes / "val.jsonl").read_text().splitlines()]
    return [FinetuneItem(Image.open(shapes / row["image"]).convert("RGB"), row["query"],
                         np.array([row["box"]], dtype=np.float32)) for row in rows]  # fmt: skip


def absent(item: FinetuneItem) -> FinetuneItem:
    return FinetuneItem(item.image, "the purple shape", np.zeros((0, 4), dtype=np.float32))


def options(checkpoint, shapes, out, **given) -> FinetuneOptions:
    return FinetuneOptions.build(model=str(checkpoint), data=str(shapes / "val.jsonl"),
                                 out=str(out), **given)  # fmt: skip


@pytest.fixture(scope="module")
def recipe(checkpoint, shapes, tmp_path_factory) -> Florence2Recipe:
    recipe = Florence2Recipe(options(checkpoint, shapes, tmp_path_factory.mktemp("unused")))
    recipe.model = recipe.load(str(checkpoint)).eval()
    return recipe


@pytest.fixture(scope="module")
def taught(checkpoint, shapes, tmp_path_factory):
    """One locate fine-tune of the random model on the shapes, shared by the tests."""
    out = tmp_path_factory.mktemp("taught") / "run"
    return sceneloc.finetune(str(checkpoint), shapes / "train.jsonl", out,
                             val=shapes / "val.jsonl", **TEACH)  # fmt: skip


@pytest.fixture(scope="module")
def taught_to_describe(checkpoint, regions, tmp_path_factory):
    """One describe fine-tune: each image's region captioned by its colour."""
    out = tmp_path_factory.mktemp("taught-describe") / "run"
    return sceneloc.finetune(str(checkpoint), regions / "train.jsonl", out, task="describe",
                             val=regions / "val.jsonl", **TEACH)  # fmt: skip


# --- the loss ---------------------------------------------------------------------------------


def test_loss_is_cross_entropy_on_the_unshifted_labels(recipe, items):
    model = recipe.model
    batch = recipe.collate([items[0], absent(items[1]), items[2]])  # answers of two lengths
    labels = batch["labels"]
    assert (labels == -100).any()
    with torch.no_grad():
        loss = recipe.loss(model, batch)
        # The decoder reads the answer shifted right once, after the start token.
        start = model.config.text_config.decoder_start_token_id
        pad = model.config.text_config.pad_token_id
        reads = torch.cat([torch.full_like(labels[:, :1], start), labels[:, :-1]], dim=1)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       pixel_values=batch["pixel_values"],
                       decoder_input_ids=reads.masked_fill(reads == -100, pad)).logits  # fmt: skip
        log_probs = F.log_softmax(logits.double(), dim=-1)
        terms = [-log_probs[b, t, labels[b, t]] for b in range(len(labels))
                 for t in range(labels.shape[1]) if labels[b, t] != -100]  # fmt: skip
        # The logits at position t score label t itself: no second shift.
        assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
        # transformers' own loss agrees (it once shifted the labels twice).
        assert model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")},
                     labels=labels).loss.item() == pytest.approx(loss.item(), rel=1e-5)  # fmt: skip


def test_padding_adds_nothing_to_the_loss(recipe, items):
    model = recipe.model
    chosen = [items[0], absent(items[1]), items[3]]
    batch = recipe.collate(chosen)
    padded = dict(batch)
    for key, value in (("input_ids", recipe.processor.tokenizer.pad_token_id),
                       ("attention_mask", 0), ("labels", -100)):  # fmt: skip
        padded[key] = F.pad(batch[key], (0, 7), value=value)
    with torch.no_grad():
        loss = recipe.loss(model, batch).item()
        assert recipe.loss(model, padded).item() == pytest.approx(loss, rel=1e-5)
        # The batch's loss is the token-weighted mean of each item's loss alone (no padding).
        alone = [recipe.collate([item]) for item in chosen]
        counts = [int((single["labels"] != -100).sum()) for single in alone]
        losses = [recipe.loss(model, single).item() for single in alone]
    assert loss == pytest.approx(np.dot(losses, counts) / sum(counts), rel=1e-5)


def test_the_vision_tower_is_frozen_by_default(checkpoint, shapes, tmp_path, items):
    built = options(checkpoint, shapes, tmp_path / "run")
    assert (built.freeze, built.lr, built.lora_rank) == ("vision", 1e-5, 0)
    task = built.make_task()
    model = task.build_model(None)
    task.loss(model, {"inputs": task.recipe.collate(items[:2])}).backward()
    vision = {n: p for n, p in model.named_parameters() if n.startswith("model.vision_tower.")}
    assert vision and all(p.grad is None and not p.requires_grad for p in vision.values())
    rest = [p for n, p in model.named_parameters() if n not in vision]
    assert all(p.grad is not None for p in rest) and any(p.grad.abs().sum() > 0 for p in rest)
    trained = {id(p) for group, _ in task.parameter_groups(model) for p in group}
    assert not trained & {id(p) for p in vision.values()}


def test_lora_adapts_the_vision_tower_only_when_it_learns(checkpoint, shapes, tmp_path):
    adapted = {}
    for freeze in ("vision", "none"):
        model = options(checkpoint, shapes, tmp_path / freeze, freeze=freeze,
                        lora_rank=2).make_task().build_model(None)  # fmt: skip
        trained = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trained and all(".lora_" in n for n in trained)
        adapted[freeze] = {n for n in trained if ".vision_tower." in n}
    assert not adapted["vision"] and adapted["none"]


def test_gradient_checkpointing_leaves_the_loss_and_gradients(checkpoint, shapes, tmp_path,
                                                              items):  # fmt: skip
    grads = []
    for checkpointing in (False, True):
        task = options(checkpoint, shapes, tmp_path / str(checkpointing), freeze="none",
                       gradient_checkpointing=checkpointing).make_task()  # fmt: skip
        model = task.build_model(None).train()
        loss = task.loss(model, {"inputs": task.recipe.collate(items[:3])})
        loss.backward()
        grads.append((loss.item(), [p.grad for p in model.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    for plain, checkpointed in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(plain, checkpointed, rtol=1e-4, atol=1e-6)


def test_what_cannot_be_taught_is_refused(checkpoint, shapes, tmp_path):
    with pytest.raises(TrainingError, match="no text tower"):
        options(checkpoint, shapes, tmp_path / "a", freeze="text").make_task().build_model(None)
    with pytest.raises(TrainingError, match="absent_fraction"):
        options(checkpoint, shapes, tmp_path / "b", task="describe",
                absent_fraction=0.5).make_task().build_model(None)  # fmt: skip


# --- what it is taught to write ---------------------------------------------------------------


def test_targets_read_back_through_the_processor_as_their_boxes(recipe, items):
    processor = recipe.processor
    boxes = np.array([[10.3, 20.7, 60.2, 90.1], [70.0, 5.0, 120.0, 40.0]], dtype=np.float32)
    item = FinetuneItem(items[0].image, " the red shape ", boxes)
    target = recipe.target(item)
    assert target.startswith("the red shape<loc_")
    found = processor.post_process_generation(f"<s>{target}</s>", task=GROUNDING,
                                              image_size=SIZE)[GROUNDING]  # fmt: skip
    assert found["labels"] == ["the red shape"] * 2
    # Within a bin (and the pixel dequantize's int() takes) of the boxes given.
    assert np.abs(np.array(found["bboxes"]) - boxes).max() <= 128 / 1000 + 1
    # "Not there": the empty answer, in which the processor finds nothing.
    assert recipe.target(absent(item)) == ""
    nothing = processor.post_process_generation("<s></s>", task=GROUNDING, image_size=SIZE)
    assert nothing[GROUNDING]["bboxes"] == []
    labels = recipe.collate([absent(item)])["labels"][0].tolist()
    assert processor.tokenizer.convert_ids_to_tokens(labels) == ["<s>", "</s>"]


# --- what it learns ---------------------------------------------------------------------------


def test_it_fixes_what_it_is_shown(taught):
    assert taught.before["acc@0.5"] < 0.2
    assert taught.after["acc@0.5"] >= 0.9


def test_best_is_a_plain_transformers_checkpoint_that_scores_as_reported(taught, shapes):
    model, info = Florence2ForConditionalGeneration.from_pretrained(
        taught.best, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    processor = AutoProcessor.from_pretrained(taught.best)
    grounder = Grounder(Florence2Backend(model, processor), "best")  # served by sceneloc
    again = evaluate_model(shapes / "val.jsonl", grounder, threshold=0.0).to_dict()
    assert (again["acc@0.5"], again["miou"]) == (taught.after["acc@0.5"], taught.after["miou"])


def test_a_saved_model_gives_the_outputs_of_the_model_in_memory(checkpoint, shapes, tmp_path,
                                                                items):  # fmt: skip
    task = options(checkpoint, shapes, tmp_path / "run", lr=1e-2).make_task()
    model = task.build_model(None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = task.recipe.collate(items)
    for _ in range(3):
        task.loss(model, {"inputs": batch}).backward()
        optimizer.step()
        optimizer.zero_grad()
    task.save(model, tmp_path / "saved")
    reloaded, info = Florence2ForConditionalGeneration.from_pretrained(
        tmp_path / "saved", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    model.eval()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "labels")}
    with torch.no_grad():
        # Equal up to float rounding: the reloaded model may sum in another order (8e-7 seen).
        torch.testing.assert_close(
            model(**inputs).logits, reloaded.eval()(**inputs).logits, rtol=1e-5, atol=1e-5
        )
    answers = [Florence2Backend(m, task.recipe.processor, max_new_tokens=16)
               .predict(items[0].image, QUERIES, 0.0)
               for m in (model, reloaded)]  # fmt: skip
    assert [c.boxes.tolist() for c in answers[0]] == [c.boxes.tolist() for c in answers[1]]


def test_lora_merged_gives_the_outputs_of_the_adapter(checkpoint, shapes, tmp_path, recipe,
                                                      items):  # fmt: skip
    result = sceneloc.finetune(str(checkpoint), shapes / "val.jsonl", tmp_path / "run",
                               epochs=1, batch_size=4, lr=1e-2, lora_rank=4)  # fmt: skip
    adapter = result.best / "adapter"
    # The vision tower is frozen (the default), so it has no adapters either.
    targets = json.loads((adapter / "adapter_config.json").read_text())["target_modules"]
    assert targets and not [name for name in targets if "vision_tower" in name]
    merged = Florence2ForConditionalGeneration.from_pretrained(result.best).eval()
    base = Florence2ForConditionalGeneration.from_pretrained(checkpoint).eval()
    unmerged = PeftModel.from_pretrained(
        Florence2ForConditionalGeneration.from_pretrained(checkpoint), adapter
    ).eval()
    inputs = recipe.collate(items)
    with torch.no_grad():
        logits = [m(**inputs).logits for m in (merged, unmerged, base)]
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits[0], logits[2], atol=1e-3)  # the adapter learnt something


def test_a_describe_finetune_says_the_taught_caption_for_each_region(taught_to_describe,
                                                                     regions):  # fmt: skip
    report = json.loads(taught_to_describe.report.read_text())
    assert report["before"]["cider"] < report["after"]["cider"]
    markdown = (taught_to_describe.report.parent / "report.md").read_text()
    assert "| cider |" in markdown and "| bleu4 |" in markdown
    describer = sceneloc.load(str(taught_to_describe.best), task="describe", device="cpu")
    rows = [json.loads(line) for line in (regions / "val.jsonl").read_text().splitlines()]
    said = [describer.describe(regions / row["image"], [row["box"]]).regions[0].caption
            for row in rows]  # fmt: skip
    assert said == [row["query"] for row in rows]
