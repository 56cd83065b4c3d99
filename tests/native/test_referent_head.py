"""The native model's referent head: its loss, several targets or none from the backend, a
fine-tune started from a model without it, and float presence weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from checkpoints.native import tiny_native
from sceneloc.backends.native import NativeBackend
from sceneloc.native import NativeGroundingModel
from sceneloc.training.native.task import NativeOptions, model_from

WORDS = ["the", "red", "star", "stars", "circle"]


def tiny(**config):
    return tiny_native([" ".join(WORDS)], **config)


def test_presence_weights_are_floats_whatever_the_file_says(tmp_path):
    model, tokenizer = tiny()
    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    config["presence_calibration"] = [1, 0, 0]
    config_file.write_text(json.dumps(config))
    loaded = NativeGroundingModel.from_pretrained(tmp_path)
    assert loaded.config.presence_calibration == [1.0, 0.0, 0.0]
    answer = NativeBackend(loaded, tokenizer).predict(Image.new("RGB", (64, 64)), ["star"], 0.0)
    assert 0 <= answer[0].scores[0] <= 1


def test_the_referent_loss_teaches_every_target_and_none():
    model, tokenizer = tiny(referent_head=True)
    ids = tokenizer(["the red stars", "the circle"], padding=True, return_tensors="pt")
    # query 0: two targets (cells 0 and 15 of the 4 x 4 grid); query 1: absent
    targets = torch.tensor([[[0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1]],
                            [[-1.0] * 4, [-1.0] * 4]])  # fmt: skip
    batch = {
        "pixel_values": torch.randn(1, 3, 64, 64), "input_ids": ids["input_ids"],
        "attention_mask": ids["attention_mask"], "image_index": torch.tensor([0, 0]),
        "boxes": torch.tensor([[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 1.0, 1.0]]),
        "present": torch.tensor([1.0, 0.0]), "target_boxes": targets,
    }  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    probabilities = model(**batch).referent_logits.sigmoid()
    assert (probabilities[0, [0, 15]] > 0.5).all()
    assert (probabilities[0, 1:15] < 0.5).all() and (probabilities[1] < 0.5).all()


def test_the_backend_returns_the_cells_the_head_names(tmp_path):
    model, tokenizer = tiny(referent_head=True)
    image = Image.new("RGB", (128, 64))
    with torch.no_grad():
        model.referent_head.weight.zero_()
        model.referent_head.bias.fill_(-1e4)  # names nothing: the best box alone
    backend = NativeBackend(model, tokenizer)
    (alone,) = backend.predict(image, ["the red stars"], 0.0)
    assert len(alone) == 1
    with torch.no_grad():
        model.referent_head.bias.fill_(1e4)  # names every cell: one box per distinct thing
    (every,) = backend.predict(image, ["the red stars"], 0.0)
    assert len(every) > 1 and np.array_equal(every.boxes[0], alone.boxes[0])
    assert every.scores[0] == alone.scores[0] and (every.scores[1:] <= every.scores[0]).all()
    ious = [[(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2])).clip(0).prod()
             / min((a[2:] - a[:2]).prod(), (b[2:] - b[:2]).prod()) for b in every.boxes]
            for a in every.boxes]  # fmt: skip
    assert all(ious[i][j] < 1 for i in range(len(ious)) for j in range(len(ious)) if i != j)


def test_init_from_keeps_the_weights_and_grows_vocabulary_and_head(tmp_path):
    model, tokenizer = tiny()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    options = NativeOptions(data="x", out="y", init_from=str(tmp_path))
    grown, new_tokenizer = model_from(options, tmp_path, ["all the red stars"])
    assert grown.config.referent_head and hasattr(grown, "referent_head")
    assert new_tokenizer.convert_tokens_to_ids("all") == len(tokenizer)
    assert all(new_tokenizer.convert_tokens_to_ids(w) == tokenizer.convert_tokens_to_ids(w)
               for w in WORDS)  # fmt: skip
    before, after = load_file(tmp_path / "model.safetensors"), grown.state_dict()
    embed = "text_encoder.embed.weight"
    assert torch.equal(after[embed][: len(tokenizer)], before[embed])
    assert all(torch.equal(after[name], value) for name, value in before.items() if name != embed)


def test_init_from_a_folder_without_a_model_is_an_error(tmp_path):
    from sceneloc.training.options import TrainingError

    with pytest.raises(TrainingError, match="cannot start from"):
        model_from(NativeOptions(data="x", out="y"), tmp_path, [])


def test_train_init_from_a_folder_without_a_model_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from sceneloc.cli import app

    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    data = tmp_path / "d.jsonl"
    sample = {"id": 1, "image": "a.png", "query": "q", "box": [0, 0, 9, 9], "split": "t"}
    data.write_text(json.dumps(sample) + "\n")
    args = ["train", "--data", data, "--out", tmp_path / "run", "--init-from", tmp_path / "none"]
    result = CliRunner().invoke(app, [*map(str, args), "--epochs", "1"])
    assert result.exit_code == 2 and "cannot start from" in result.output
    assert "Traceback" not in result.output
