"""``sceneloc train --task describe``: a tiny run saves a describer that loads and describes;
bad tasks and options are refused in one line."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

import sceneloc
from sceneloc.cli import app
from sceneloc.data.synth import generate

runner = CliRunner()

TINY = ["--image-size", "64", "--hidden-size", "16", "--batch-size", "4"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    folder = tmp_path_factory.mktemp("describe-synth")
    generate(folder, num_images=6, seed=5, size=160, min_objects=6, max_objects=10,
             splits="train=1")  # fmt: skip
    return folder / "annotations.jsonl"


def train(*args):
    return runner.invoke(app, ["train", *map(str, args)])


def test_trains_a_describer_that_loads_and_describes(synth, tmp_path):
    out = tmp_path / "run"
    result = train("--task", "describe", "--preset", "synthetic-cpu", "--data", synth,
                   "--val", synth, "--out", out, "--epochs", "2", *TINY)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "val_exact" in result.output
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert all(0.0 <= float(row["val_exact"]) <= 1.0 for row in rows)
    describer = sceneloc.load(str(out / "best"), task="describe", device="cpu")
    answer = describer.describe(synth.parent / "images" / "000000.png", [[10, 10, 60, 60]])
    assert len(answer.regions) == 1 and answer.regions[0].score is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "speak"], "unknown training task 'speak'"),
        (["--task", "describe", "--fusion", "concat"], "unknown training option(s): fusion"),
        (["--task", "describe", "--preset", "concat-glove"], "unknown preset 'concat-glove'"),
    ],
)
def test_bad_task_or_option_is_one_line_exit_2(synth, tmp_path, args, message):
    result = train(*args, "--data", synth, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_describe_training_skips_no_target_samples(tmp_path):
    """A description of nothing there (gRefCOCO's no-target samples) is no region to learn."""
    from sceneloc.data.format import Sample
    from sceneloc.training.describe.dataset import region_groups

    samples = [
        Sample("a", "x.png", "the red circle", [1.0, 2.0, 30.0, 40.0], "train"),
        Sample("b", "x.png", "the blue star", None, "train", boxes=[]),
    ]
    (group,) = region_groups(samples, tmp_path)
    assert group.boxes == [[1.0, 2.0, 30.0, 40.0]] and group.references == [["the red circle"]]
