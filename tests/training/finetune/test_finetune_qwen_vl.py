"""Fine-tuning the Qwen-VL backends: the answers taught are those the backend parses, the loss
is cross-entropy over them alone, a short run teaches a tiny model the taught boxes, and the
saved checkpoints are ordinary ones (plain transformers, merged LoRA = the adapter)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

import sceneloc
from checkpoints.qwen_vl import IM_END, build_qwen_vl_to_train
from sceneloc.backends.qwen_vl import DESCRIBE_PROMPT, GROUNDING_PROMPT, parse_boxes
from sceneloc.evaluation import evaluate_model
from sceneloc.training.finetune import FinetuneItem, FinetuneOptions, FinetuneResult, FinetuneTask
from sceneloc.training.finetune.qwen_vl import IGNORE, NOT_FOUND, QwenVLRecipe, answer_text

WIDTH, HEIGHT = 192, 128
#: The images of the overfitting run, each with a large red square and a large blue circle.
IMAGES = 4
#: How often each sample is repeated in the training file: steps per epoch, few validations.
COPIES = 40


def scene(index: int) -> tuple[Image.Image, dict[str, list[int]]]:
    """A grey image with a red square and a blue circle, both large, placed by ``index``."""
    image = Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    left = 8 + 12 * index
    boxes = {
        "the red square": [left, 10, left + 80, 110],
        "the blue circle": [left + 90, 20 + 4 * index, min(WIDTH - 2, left + 170), 120],
    }
    draw.rectangle(boxes["the red square"], fill=(220, 40, 40))
    draw.ellipse(boxes["the blue circle"], fill=(40, 40, 220))
    return image, boxes


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """``val.jsonl`` (each query once) and ``train.jsonl`` (the same, :data:`COPIES` times)."""
    root = tmp_path_factory.mktemp("qwen-vl-data")
    rows = []
    for index in range(IMAGES):
        image, boxes = scene(index)
        image.save(root / f"{index}.png")
        for query, box in boxes.items():
            rows.append({"id": f"{index}-{query}", "image": f"{index}.png", "query": query,
                         "box": box, "split": "train"})  # fmt: skip
    (root / "val.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (root / "train.jsonl").write_text(
        "".join(
            json.dumps({**row, "id": f"{row['id']}-{copy}"}) + "\n"
            for copy in range(COPIES)
            for row in rows
        )
    )
    return root


@pytest.fixture(scope="module")
def qwen3_vl(tmp_path_factory) -> Path:
    return build_qwen_vl_to_train(tmp_path_factory.mktemp("qwen3-vl-train"), "qwen3_vl")


@pytest.fixture(scope="module")
def run(qwen3_vl: Path, data: Path, tmp_path_factory) -> FinetuneResult:
    """One short LoRA fine-tune (the recipe's defaults but the learning rate, which a tiny
    random model takes larger) shared by the tests below."""
    return sceneloc.finetune(
        str(qwen3_vl), data / "train.jsonl", tmp_path_factory.mktemp("qwen-vl-run") / "out",
        val=data / "val.jsonl", epochs=4, batch_size=8, lr=1.5e-2, augment=False,
    )  # fmt: skip


def recipe_for(checkpoint: Path, task: str = "locate", **options) -> QwenVLRecipe:
    built = FinetuneOptions.build(model=str(checkpoint), data="train.jsonl", out="out",
                                  task=task, **options)  # fmt: skip
    return QwenVLRecipe(built)


def items() -> list[FinetuneItem]:
    """Items of different prompt and answer lengths, one of them with its referent absent."""
    image, boxes = scene(1)
    other, _ = scene(3)
    return [
        FinetuneItem(image, "the red square", np.array([boxes["the red square"]], np.float32)),
        FinetuneItem(other.resize((96, 160)), "the blue circle", np.array([[10, 20, 90, 150]],
                                                                          np.float32)),
        FinetuneItem(image, "a green triangle that is not there", np.zeros((0, 4), np.float32)),
    ]  # fmt: skip


def test_answers_are_written_as_the_backend_parses_them():
    boxes = [[12, 40, 500, 990], [0, 0, 1000, 1000]]
    answer = answer_text(boxes, 'the "red" square')
    assert parse_boxes(answer) == boxes
    assert answer.startswith("```json\n[\n\t{") and answer.endswith("}\n]\n```")
    assert json.loads(answer.removeprefix("```json\n").removesuffix("\n```"))[0] == {
        "bbox_2d": boxes[0], "label": 'the "red" square'
    }  # fmt: skip
    assert answer_text([], "anything") == NOT_FOUND and parse_boxes(NOT_FOUND) == []


@pytest.mark.parametrize("model_type", ["qwen3_vl", "qwen2_5_vl"])
def test_loss_is_cross_entropy_over_the_answer_tokens_only(model_type, tmp_path):
    checkpoint = build_qwen_vl_to_train(tmp_path / model_type, model_type)
    recipe = recipe_for(checkpoint)
    model = recipe.load(str(checkpoint)).eval()
    batch = recipe.collate(items())
    labels, input_ids = batch["labels"], batch["input_ids"]
    tokenizer = recipe.processor.tokenizer
    image_token = model.config.image_token_id
    end = tokenizer.convert_tokens_to_ids(IM_END)
    grids = batch["image_grid_thw"]
    for row, item in enumerate(items()):
        learnt = (labels[row] != IGNORE).nonzero()[:, 0]
        start, stop = int(learnt[0]), int(learnt[-1]) + 1
        # The answer alone is learnt: all of it after the whole prompt, ending the turn.
        assert learnt.tolist() == list(range(start, stop))
        taught = labels[row, start:stop].tolist()
        assert taught == input_ids[row, start:stop].tolist() and taught[-1] == end
        assert tokenizer.decode(input_ids[row, :start]).endswith(
            GROUNDING_PROMPT.format(query=item.query) + f"{IM_END}\n<|im_start|>assistant\n"
        )
        assert (labels[row][input_ids[row] == image_token] == IGNORE).all()
        assert (labels[row][batch["attention_mask"][row] == 0] == IGNORE).all()
        answer = tokenizer.decode(taught[:-1])
        # Boxes in the model's coordinates: 0-1000, or pixels of the image as resized.
        _, rows, columns = grids[row].tolist()
        patch = recipe.processor.image_processor.patch_size
        extent = (1000, 1000) if model_type == "qwen3_vl" else (columns * patch, rows * patch)
        scale = np.array(extent * 2) / np.array(item.image.size * 2)
        assert parse_boxes(answer) == np.round(item.boxes * scale).tolist()
    assert tokenizer.decode(labels[2][labels[2] != IGNORE].tolist()[:-1]) == NOT_FOUND

    with torch.no_grad():
        loss = recipe.loss(model, batch)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        log_probs = model(**inputs).logits.float().log_softmax(-1)
        # By hand: each answer token's -log p, predicted from the position before it.
        terms = [
            -log_probs[row, position - 1, labels[row, position]]
            for row in range(len(labels))
            for position in range(labels.shape[1])
            if labels[row, position] != IGNORE
        ]
        own = model(**batch).loss  # transformers' own loss on the same labels
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    assert loss.item() == pytest.approx(own.item(), rel=1e-5)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(qwen3_vl):
    def loss_and_gradients(checkpointing: bool) -> tuple[float, list[torch.Tensor]]:
        task = FinetuneTask(recipe_for(qwen3_vl, gradient_checkpointing=checkpointing,
                                       lora_dropout=0.0).options)  # fmt: skip
        torch.manual_seed(0)  # the same LoRA initialisation
        model = task.build_model(None).train()
        loss = task.recipe.loss(model, task.recipe.collate(items()))
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        return loss.item(), grads

    plain, plain_grads = loss_and_gradients(False)
    checkpointed, checkpointed_grads = loss_and_gradients(True)
    assert checkpointed == pytest.approx(plain, rel=1e-6)
    assert len(plain_grads) == len(checkpointed_grads) > 0
    for a, b in zip(plain_grads, checkpointed_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_lora_adapts_the_language_model_only(qwen3_vl):
    task = FinetuneTask(FinetuneOptions.build(model=str(qwen3_vl), data="t.jsonl", out="out"))
    model = task.build_model(None)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert all(".language_model.layers." in name for name in trainable)
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                       "down_proj"}  # fmt: skip
    # The adapters are new weights: they learn at lr, not at the towers' backbone_lr.
    (rest, scale_rest), (towers, _) = task.parameter_groups(model)
    assert scale_rest == 1.0 and len(rest) == len(trainable) and not towers


def test_without_lora_the_vision_encoder_stays_and_the_merger_learns_at_lr(qwen3_vl):
    task = FinetuneTask(recipe_for(qwen3_vl, lora_rank=0).options)
    model = task.build_model(None)
    names = {id(p): name for name, p in model.named_parameters()}
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(name.startswith("model.visual.") for name in frozen)
    assert not any("merger" in name for name in frozen)
    (rest, _), (towers, scale) = task.parameter_groups(model)
    assert {names[id(p)].split(".")[2] for p in rest} == {"merger", "deepstack_merger_list"}
    assert all(names[id(p)].startswith(("model.language_model.", "lm_head.")) for p in towers)
    assert scale == pytest.approx(0.1)  # backbone_lr: lr / 10


def test_a_short_finetune_teaches_the_taught_boxes(run):
    assert run.before["acc@0.5"] < 0.2
    assert run.after["acc@0.5"] >= 0.9
    report = json.loads(run.report.read_text())
    assert report["family"] == "qwen3-vl" and report["options"]["lora_rank"] == 16


def test_best_is_an_ordinary_checkpoint(run, data):
    # sceneloc reads it, and finds what the run's validation found.
    grounder = sceneloc.load(str(run.best))
    assert (
        evaluate_model(data / "val.jsonl", grounder, threshold=0.0).to_dict()["acc@0.5"]
        == (run.after["acc@0.5"])
    )
    # So does plain transformers, with every weight in place.
    _, info = AutoModelForImageTextToText.from_pretrained(run.best, output_loading_info=True)
    assert not any(info.values()), info
    adapter = load_file(run.best / "adapter" / "adapter_model.safetensors")
    assert adapter and not any("visual" in key for key in adapter)


def test_merged_weights_equal_the_adapter_in_memory(run, qwen3_vl):
    recipe = recipe_for(qwen3_vl)
    adapter = PeftModel.from_pretrained(recipe.load(str(qwen3_vl)), run.best / "adapter").eval()
    batch = recipe.collate(items())
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    saved = AutoModelForImageTextToText.from_pretrained(run.best).eval()
    image, _ = scene(0)
    prompts = [GROUNDING_PROMPT.format(query=q) for q in ("the red square", "the blue circle")]

    def answers(model) -> list[str]:
        backend = recipe.backend(model)
        return backend.generate(backend.encode_image(image), prompts)

    with torch.no_grad():
        unmerged = adapter(**inputs).logits
        unmerged_answers = answers(adapter.get_base_model())
        merged_model = adapter.merge_and_unload()  # as the run merges it before saving
        merged = merged_model(**inputs).logits
        reloaded = saved(**inputs).logits
        # The checkpoint holds the merge exactly; the merge differs from the adapter by the
        # rounding of (W + BA) x against W x + B A x.
        assert torch.equal(reloaded, merged)
        torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)
        assert answers(merged_model) == unmerged_answers == answers(saved)
    assert all(parse_boxes(answer) for answer in unmerged_answers)


def test_describe_data_teaches_the_caption_of_the_region(qwen3_vl, data, tmp_path):
    recipe = recipe_for(qwen3_vl, task="describe")
    recipe.load(str(qwen3_vl))
    image, boxes = scene(2)
    region = np.array([boxes["the red square"]], np.float32)
    batch = recipe.collate([FinetuneItem(image, "the red square", region)])
    tokenizer = recipe.processor.tokenizer
    labels = batch["labels"][0]
    written = np.round(region[0] * 1000 / np.array([WIDTH, HEIGHT] * 2)).astype(int).tolist()
    prompt = tokenizer.decode(batch["input_ids"][0][labels == IGNORE])
    assert DESCRIBE_PROMPT.format(box=written) in prompt
    assert tokenizer.decode(labels[labels != IGNORE]) == "the red square" + IM_END
    # The whole run, scored as describe evaluations are.
    result = sceneloc.finetune(
        str(qwen3_vl), data / "val.jsonl", tmp_path / "out", val=data / "val.jsonl",
        task="describe", epochs=1, batch_size=8, val_limit=2,
    )  # fmt: skip
    assert {"cider", "bleu4"} <= set(result.before) and {"cider", "bleu4"} <= set(result.after)
    assert sceneloc.load(str(result.best), task="describe").describe(
        data / "0.png", [boxes["the red square"]]
    )
