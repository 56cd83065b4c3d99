"""``sceneloc train --task align``: its options, and what it refuses in one line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sceneloc.cli import app
from sceneloc.training import TrainingError
from sceneloc.training.align import AlignOptions

runner = CliRunner()


def test_the_preset_starts_from_the_bundled_grounders_frozen_image_encoder():
    options = AlignOptions.build("synthetic-cpu", data="d.jsonl", out="run")
    assert options.image_encoder_from_proposer and options.freeze_image_encoder
    assert options.proposer is None  # the bundled native-synth
    assert options.make_task().metrics[0] == "val_acc"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"text_encoder": "word-vectors"}, "builtin or a pretrained"),
        ({"hidden_size": 30, "attention_heads": 4}, "multiple of attention_heads"),
        ({"region_samples": 0}, "region_samples must be at least 1"),
    ],
)
def test_options_that_cannot_train_are_refused(values, message):
    with pytest.raises(TrainingError, match=message):
        AlignOptions.build(data="d.jsonl", out="run", **values)


def test_an_unknown_task_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["train", "--task", "paint", "--data", "d", "--out", "o"])
    assert result.exit_code == 2
    assert "unknown training task 'paint'" in result.output
