"""``sceneloc data synth``: writes the dataset, one-line errors for bad options."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from sceneloc.cli.synth import synth
from sceneloc.data import read_samples

runner = CliRunner()


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(synth)
    return app


def test_cli_writes_the_dataset(tmp_path):
    out = tmp_path / "synth"
    result = runner.invoke(cli(), ["--out", str(out), "--num-images", "4", "--seed", "3",
                                   "--size", "192", "--min-objects", "8", "--max-objects", "12",
                                   "--splits", "train=1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "train" in result.stdout and "images/min" in result.stdout
    samples = list(read_samples(out / "annotations.jsonl"))
    scenes = [json.loads(line) for line in (out / "scenes.jsonl").read_text().splitlines()]
    assert len(scenes) == 4 and {s.split for s in samples} == {"train"}


def test_cli_is_registered_under_data():
    from sceneloc.cli import app

    result = runner.invoke(app, ["data", "synth", "--help"])
    assert result.exit_code == 0 and "--num-images" in result.stdout


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--min-objects", "40", "--max-objects", "30"], "min objects"),
        (["--num-images", "0"], "number of images"),
        (["--size", "100"], "size must be"),
        (["--splits", "train=1,holdout=1"], "bad split"),
        (["--out", "{file}/sub"], "cannot write"),
    ],
)
def test_cli_bad_options_exit_2_with_one_line(tmp_path, options, message):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    arguments = {"--out": str(tmp_path / "out"), "--num-images": "2", "--seed": "0",
                 "--size": "192", "--min-objects": "8", "--max-objects": "12"}  # fmt: skip
    for name, value in zip(options[::2], options[1::2]):
        arguments[name] = value.format(file=blocker)
    result = runner.invoke(cli(), [part for pair in arguments.items() for part in pair])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "error:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output and result.stdout == ""
