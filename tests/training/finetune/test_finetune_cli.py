"""`sceneloc finetune` on the command line: every flag and config key reaches the run, and
each bad input is one line on stderr, exit 2, and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from sceneloc.cli import app

runner = CliRunner()


def write_samples(folder: Path, count: int = 4, **overrides) -> Path:
    """``count`` 160 x 120 images of a red rectangle, one query each (``overrides`` change
    every row)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        image = Image.new("RGB", (160, 120), (128, 128, 128))
        box = [10 + 15 * index, 20, 90 + 15 * index, 100]
        ImageDraw.Draw(image).rectangle(box, fill=(220, 40, 40))
        image.save(folder / f"{index}.png")
        rows.append({"id": str(index), "image": f"{index}.png", "query": "the red square",
                     "box": box, "split": "train", **overrides})  # fmt: skip
    path = folder / "samples.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    return write_samples(tmp_path_factory.mktemp("finetune-cli-data"))


def finetune(*args):
    return runner.invoke(app, ["finetune", *map(str, args)])


def saved_options(out: Path) -> dict:
    return json.loads((out / "options.json").read_text())


#: Every option flag with a value other than its default, and the option it sets.
FLAGS = {
    "--task": ("locate", "task", "locate"),
    "--epochs": ("1", "epochs", 1),
    "--max-minutes": ("5", "max_minutes", 5.0),
    "--lr": ("0.002", "lr", 0.002),
    "--backbone-lr": ("0.0003", "backbone_lr", 0.0003),
    "--freeze": ("text", "freeze", "text"),
    "--lora-rank": ("2", "lora_rank", 2),
    "--lora-alpha": ("4", "lora_alpha", 4.0),
    "--lora-dropout": ("0.1", "lora_dropout", 0.1),
    "--batch-size": ("1", "batch_size", 1),
    "--grad-accum": ("2", "grad_accum", 2),
    "--precision": ("fp32", "precision", "fp32"),
    "--lr-schedule": ("stable-decay", "lr_schedule", "stable-decay"),
    "--val-limit": ("3", "val_limit", 3),
    "--absent-fraction": ("0.5", "absent_fraction", 0.5),
    "--seed": ("7", "seed", 7),
    "--num-workers": ("1", "num_workers", 1),
}


def test_every_flag_reaches_the_run(grounding_dino_dir, samples, tmp_path):
    out = tmp_path / "run"
    values = [arg for flag, (value, _, _) in FLAGS.items() for arg in (flag, value)]
    switches = ["--gradient-checkpointing", "--no-augment"]
    result = finetune("--model", grounding_dino_dir, "--data", samples, "--val", samples,
                      "--out", out, *values, *switches)  # fmt: skip
    assert result.exit_code == 0, result.output
    options = saved_options(out)
    for _, name, expected in FLAGS.values():
        assert options[name] == expected, name
    assert options["gradient_checkpointing"] is True and options["augment"] is False
    assert options["model"] == str(grounding_dino_dir) and options["val"] == str(samples)
    assert json.loads((out / "report.json").read_text())["options"] == options
    assert "| acc@0.5 |" in result.stdout  # the report, printed
    # --resume continues it (options.json stays the first run's).
    again = finetune("--model", grounding_dino_dir, "--data", samples, "--out", out, *values,
                     "--epochs", "2", "--gradient-checkpointing", "--resume")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads((out / "trainer_state.json").read_text())["epoch"] == 1


def test_a_yaml_config_takes_the_same_keys_and_flags_override_it(
    grounding_dino_dir, samples, tmp_path
):
    out = tmp_path / "run"
    config = tmp_path / "finetune.yaml"
    config.write_text(
        f"model: {grounding_dino_dir}\ndata: {samples}\nout: {out}\nepochs: 3\nlr: 3e-4\n"
        "batch-size: 4\ngrad_accum: 2\nfreeze: vision\nlora_rank: 2\naugment: false\n"
        "gradient_checkpointing: true\nweight_decay: 0.05\n"
    )
    result = finetune("--config", config, "--epochs", "1", "--no-gradient-checkpointing")
    assert result.exit_code == 0, result.output
    options = saved_options(out)
    assert options["epochs"] == 1 and options["gradient_checkpointing"] is False  # flags
    assert options["lr"] == 3e-4 and options["batch_size"] == 4 and options["grad_accum"] == 2
    assert options["freeze"] == "vision" and options["lora_rank"] == 2
    assert options["augment"] is False and options["weight_decay"] == 0.05


def empty(folder: Path) -> Path:
    folder.mkdir(parents=True)
    path = folder / "empty.jsonl"
    path.write_text("\n")
    return path


def box_outside(folder: Path) -> Path:
    return write_samples(folder, 2, box=[100, 20, 170, 100])  # the images are 160 wide


def unreadable_image(folder: Path) -> Path:
    path = write_samples(folder, 2)
    (folder / "1.png").write_bytes(b"not a png")
    return path


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"data": empty}, "holds no usable samples"),
        ({"data": box_outside}, "box [100.0, 20.0, 170.0, 100.0] is not inside its 160 x 120"),
        ({"data": unreadable_image}, "sample 1"),
        ({"val": box_outside}, "is not inside its"),
        ({"model": "no-such-model"}, "unknown model 'no-such-model'"),
        ({"model": "owlv2"}, "transformers has no training loss for OWLv2"),
        ({"flags": ["--freeze", "all"]}, "freeze must be one of vision, text, none"),
        ({"flags": ["--resume"]}, "nothing to resume"),
        pytest.param(
            {"flags": ["--precision", "fp16"]},
            "fp16 needs a GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs fp16"),
        ),
    ],
    ids=[
        "no-samples",
        "box-outside",
        "unreadable-image",
        "bad-val",
        "unknown-model",
        "owlv2",
        "bad-freeze",
        "nothing-to-resume",
        "fp16-on-cpu",
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    grounding_dino_dir, owlv2_dir, samples, tmp_path, bad, message
):
    model = {"owlv2": owlv2_dir}.get(bad.get("model"), bad.get("model", grounding_dino_dir))
    data = bad["data"](tmp_path / "data") if "data" in bad else samples
    val = bad["val"](tmp_path / "val") if "val" in bad else samples
    out = tmp_path / "run"
    result = finetune("--model", model, "--data", data, "--val", val, "--out", out,
                      "--epochs", "1", *bad.get("flags", []))  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert not out.exists()


def test_an_out_that_holds_a_run_is_left_alone_without_resume(
    grounding_dino_dir, samples, tmp_path
):
    out = tmp_path / "run"
    common = ["--model", grounding_dino_dir, "--data", samples, "--out", out, "--epochs", "1"]
    assert finetune(*common).exit_code == 0
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    result = finetune(*common, "--lr", "0.01")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds a training run; pass --resume" in lines[0]
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == before
