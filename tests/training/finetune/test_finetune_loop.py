"""The training loop as fine-tuning runs it: gradient accumulation, resume, precision,
gradient checkpointing, two processes and the report, on a tiny Grounding DINO."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

import sceneloc
from sceneloc import training
from sceneloc.evaluation import evaluate_model
from sceneloc.training.finetune import FinetuneOptions

#: Same-size images and one query: a batch of 2 needs no padding, so it is the two items.
SIZE = (160, 120)


def write_samples(folder: Path, count: int, query: str = "the red square") -> Path:
    """``count`` images of a red rectangle at different places, one query each."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        image = Image.new("RGB", SIZE, (128, 128, 128))
        box = [10 + 15 * index, 20, 90 + 15 * index, 100]
        ImageDraw.Draw(image).rectangle(box, fill=(220, 40, 40))
        image.save(folder / f"{index}.png")
        rows.append({"id": str(index), "image": f"{index}.png", "query": query, "box": box,
                     "split": "train"})  # fmt: skip
    path = folder / "samples.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    return write_samples(tmp_path_factory.mktemp("finetune-data"), 4)


@pytest.fixture(scope="module")
def no_dropout_dir(grounding_dino_dir, tmp_path_factory) -> Path:
    """The tiny checkpoint without dropout or drop-path: two runs that see the same data
    then compute the same gradients, whatever random numbers each draws."""
    folder = tmp_path_factory.mktemp("grounding-dino-no-dropout")
    shutil.copytree(grounding_dino_dir, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config["dropout"] = config["fusion_droppath"] = 0.0
    config["backbone_config"]["drop_path_rate"] = 0.0
    config["text_config"]["hidden_dropout_prob"] = 0.0
    config["text_config"]["attention_probs_dropout_prob"] = 0.0
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def run(model: Path, data: Path, out: Path, progress=None, **options):
    built = FinetuneOptions.build(model=str(model), data=str(data), out=str(out), **options)
    return training.train(built, progress)


def weights(out: Path, kept: str = "last") -> dict[str, torch.Tensor]:
    return load_file(out / kept / "model.safetensors")


def assert_same_weights(first: dict, second: dict, atol: float) -> None:
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=atol, rtol=0, msg=name)


def applied_gradients(model: Path, data: Path, out: Path, **options) -> list[list[torch.Tensor]]:
    """Train, keeping the gradients each optimizer step applies (in parameter order)."""
    steps: list[list[torch.Tensor]] = []

    def keep(optimizer, args, kwargs):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        steps.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params])

    handle = register_optimizer_step_pre_hook(keep)
    try:
        run(model, data, out, **options)
    finally:
        handle.remove()
    return steps


def test_batch_of_one_accumulated_twice_steps_like_a_batch_of_two(no_dropout_dir, tmp_path):
    """Three samples: two optimizer steps an epoch either way, the second of one sample (an
    epoch's last accumulation is shorter, and still the mean of its batches): each step
    applies the gradient of the same mean loss, so the weights follow the same path.

    The learning rate is 0 so that every step is taken at the same weights: a random tiny
    Grounding DINO is chaotic (a change in the 6th digit of a weight flips a query's match),
    and Adam turns rounding noise (the two runs sum in another order) into such changes. The
    tolerance is rounding's (a wrong mean, such as a sum, or a short last group weighed as a
    full one, is off by a third or more): on some CPUs float32 batches of two sum in another
    order than two batches of one, up to 1e-5 apart where the largest gradient is 1e-2."""
    data = write_samples(tmp_path / "data", 3)
    common = dict(epochs=2, lr=0.0, augment=False, seed=3, precision="fp32")
    two = applied_gradients(no_dropout_dir, data, tmp_path / "two", batch_size=2, **common)
    one = applied_gradients(no_dropout_dir, data, tmp_path / "one", batch_size=1, grad_accum=2,
                            **common)  # fmt: skip
    assert len(one) == len(two) == 4
    for accumulated, batched in zip(one, two):
        scale = max(float(g.abs().max()) for g in batched)
        assert scale > 0
        for a, b in zip(accumulated, batched):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3 * scale)
    rows = {
        name: list(csv.DictReader((tmp_path / name / "metrics.csv").open()))
        for name in ("one", "two")
    }
    assert [r["step"] for r in rows["one"]] == [r["step"] for r in rows["two"]] == ["2", "4"]
    assert [float(r["train_loss"]) for r in rows["one"]] == pytest.approx(
        [float(r["train_loss"]) for r in rows["two"]], rel=1e-5
    )


class Interrupted(Exception):
    """Stands for a run killed part way."""


@pytest.mark.parametrize(
    "adapted", [{}, {"lora_rank": 4, "freeze": "text"}], ids=["full", "lora-frozen-text"]
)
def test_resume_ends_where_an_uninterrupted_run_ends(
    grounding_dino_dir, samples, tmp_path, adapted
):
    """Killed in its second epoch and resumed, a run ends with the steps, learning rate and
    weights of one never stopped: the optimizer, random generators (dropout), the shuffle of
    each epoch and the schedule all continue; LoRA adapters and frozen towers included."""
    common = dict(epochs=3, batch_size=2, lr=1e-3, seed=1, **adapted)
    whole = run(grounding_dino_dir, samples, tmp_path / "whole", **common)

    def stop_in_second_epoch(progress):
        if progress.epoch == 2 and progress.step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(grounding_dino_dir, samples, tmp_path / "cut", stop_in_second_epoch, **common)
    assert json.loads((tmp_path / "cut" / "trainer_state.json").read_text())["epoch"] == 0
    resumed = run(grounding_dino_dir, samples, tmp_path / "cut", resume=True, **common)
    assert [r.epoch for r in resumed] == [2, 3]
    assert resumed[-1].step == whole[-1].step == 6
    assert resumed[-1].lr == pytest.approx(whole[-1].lr)
    assert resumed[-1].train_loss == pytest.approx(whole[-1].train_loss, rel=1e-4)
    rows = list(csv.DictReader((tmp_path / "cut" / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert_same_weights(weights(tmp_path / "cut"), weights(tmp_path / "whole"), atol=1e-5)
    if adapted:
        # The frozen text tower kept its weights (its adapters merged in changed nothing).
        start = load_file(grounding_dino_dir / "model.safetensors")
        ended = weights(tmp_path / "cut")
        text = [n for n in start if n.startswith("model.text_backbone.")]
        assert text and all(torch.equal(start[n], ended[n]) for n in text)
        assert (tmp_path / "cut" / "last" / "adapter" / "adapter_config.json").is_file()


def test_resume_refuses_another_adaptation(grounding_dino_dir, samples, tmp_path):
    out = tmp_path / "run"
    run(grounding_dino_dir, samples, out, epochs=1, batch_size=4)
    with pytest.raises(training.TrainingError, match=r"lora_rank 0.*resume with the same"):
        run(grounding_dino_dir, samples, out, epochs=2, batch_size=4, lora_rank=4, resume=True)


def test_gradient_checkpointing_learns_the_same(no_dropout_dir, samples, tmp_path, caplog):
    """transformers checkpoints no Grounding DINO as a whole: its backbone and text encoder
    recompute their activations, and the weights learnt are those of a plain run."""
    common = dict(epochs=1, batch_size=2, lr=1e-3, augment=False)
    run(no_dropout_dir, samples, tmp_path / "plain", **common)
    with caplog.at_level(logging.INFO, logger="sceneloc.training.finetune.recipe"):
        run(no_dropout_dir, samples, tmp_path / "ckpt", gradient_checkpointing=True, **common)
    assert "gradient checkpointing in model.backbone" in caplog.text
    assert "model.text_backbone" in caplog.text
    assert_same_weights(weights(tmp_path / "ckpt"), weights(tmp_path / "plain"), atol=1e-6)


def test_bf16_trains_on_a_cpu(grounding_dino_dir, samples, tmp_path):
    records = run(grounding_dino_dir, samples, tmp_path / "run", epochs=1, batch_size=2,
                  precision="bf16")  # fmt: skip
    assert records[-1].step == 2
    saved = weights(tmp_path / "run")
    assert {t.dtype for t in saved.values()} == {torch.float32}  # mixed, not cast
    assert all(torch.isfinite(t).all() for t in saved.values())


def test_report_compares_before_and_after(grounding_dino_dir, samples, tmp_path):
    out = tmp_path / "run"
    result = sceneloc.finetune(str(grounding_dino_dir), samples, out, val=samples, epochs=2,
                               batch_size=2, lr=1e-3)  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    for figures in (report["before"], report["after"]):
        assert {"acc@0.5", "miou", "by_type", "n"} <= figures.keys()
        assert figures["n"] == 4
    assert result.before == report["before"] and result.after == report["after"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert float(rows[0]["val_acc"]) == report["before"]["acc@0.5"]
    assert [e["epoch"] for e in report["by_epoch"]] == [0, 1, 2]
    # `after` is best/: the loop's pick, and what `sceneloc evaluate` finds in it.
    best = max((1, 2), key=lambda e: (float(rows[e]["val_acc"]), float(rows[e]["val_miou"])))
    assert report["best_epoch"] == best
    assert report["by_epoch"][best] == {"epoch": best, "acc@0.5": report["after"]["acc@0.5"],
                                        "miou": report["after"]["miou"]}  # fmt: skip
    again = evaluate_model(samples, sceneloc.load(str(out / "best"), device="cpu"), threshold=0.0)
    assert again.to_dict()["miou"] == pytest.approx(report["after"]["miou"], abs=1e-5)
    assert report["options"]["lr"] == 1e-3 and report["options"]["model"] == str(grounding_dino_dir)
    assert report["steps"] == 4 and report["epochs"] == 2
    digest = hashlib.sha256(samples.read_bytes()).hexdigest()
    assert report["data_sha256"] == {"data": digest, "val": digest}
    assert report["versions"]["torch"] == torch.__version__
    markdown = (out / "report.md").read_text()
    assert "| acc@0.5 |" in markdown and "| miou |" in markdown and digest in markdown


def test_two_processes_end_with_identical_weights(grounding_dino_dir, samples, tmp_path):
    """`accelerate launch` of two CPU processes (gloo): Grounding DINO has parameters that
    get no gradient, which DDP only accepts when told to look for them."""
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "sceneloc", "finetune", "--model", str(grounding_dino_dir), "--data", str(samples),
        "--out", str(out), "--epochs", "1", "--batch-size", "1", "--grad-accum", "2",
        "--lr", "1e-3",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / "ranks" / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [r["queries_seen"] for r in ranks] == [2, 2]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    start = load_file(grounding_dino_dir / "model.safetensors")
    trained = weights(out)
    assert any(not torch.equal(start[n], trained[n]) for n in start)
