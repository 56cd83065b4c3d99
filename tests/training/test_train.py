"""The loop, through ``sceneloc train``: saved models, resume, configs, bad options,
progress, and a two-process run."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import sceneloc
from sceneloc import training
from sceneloc.cli import app
from sceneloc.data.synth import generate
from sceneloc.evaluation import evaluate_model
from sceneloc.training import TrainingProgress
from sceneloc.training.native import NativeOptions

runner = CliRunner()

#: A model small enough to train a few steps in seconds.
TINY = ["--image-size", "64", "--hidden-size", "16", "--fusion-layers", "1", "--batch-size", "4"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A tiny synthetic dataset (train and val in one folder, as `data synth` writes it)."""
    folder = tmp_path_factory.mktemp("synth")
    generate(folder, num_images=10, seed=5, size=160, min_objects=6, max_objects=10,
             splits="train=0.8,val=0.2")  # fmt: skip
    lines = (folder / "annotations.jsonl").read_text().splitlines()
    for split in ("train", "val"):
        kept = [line for line in lines if json.loads(line)["split"] == split]
        (folder / f"{split}.jsonl").write_text("\n".join(kept) + "\n")
    return folder


def train(*args: str):
    return runner.invoke(app, ["train", *map(str, args)])


def test_trains_and_saves_loadable_models(synth, tmp_path):
    out = tmp_path / "run"
    result = train("--data", synth / "train.jsonl", "--val", synth / "val.jsonl",
                   "--out", out, "--epochs", "2", "--preset", "synthetic-cpu", *TINY)  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    accuracy = [float(row["val_acc"]) for row in rows]
    for kept, recorded in (("last", accuracy[-1]), ("best", max(accuracy))):
        # Validation also calibrated the presence score: weights fitted, not the defaults.
        calibration = json.loads((out / kept / "config.json").read_text())["presence_calibration"]
        assert len(calibration) == 3 and calibration != [1.0, 0.0, 0.0]
        # The saved model is the one validated: `sceneloc evaluate` gives the recorded figure.
        grounder = sceneloc.load(str(out / kept), device="cpu")
        metrics = evaluate_model(synth / "val.jsonl", grounder, threshold=0.0).to_dict()
        assert metrics["acc@0.5"] == pytest.approx(recorded, abs=1e-6)


def test_resume_continues_where_it_stopped(synth, tmp_path):
    out = tmp_path / "run"
    common = ["--data", synth / "train.jsonl", "--out", out, "--preset", "synthetic-cpu", *TINY]
    assert train(*common, "--epochs", "1").exit_code == 0
    assert json.loads((out / "trainer_state.json").read_text())["epoch"] == 0
    result = train(*common, "--epochs", "2", "--resume")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert int(rows[1]["step"]) > int(rows[0]["step"])


def test_yaml_config_and_flags_override_it(synth, tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "train.yaml"
    config.write_text(
        f"data: {synth / 'train.jsonl'}\nout: {out}\npreset: synthetic-cpu\nepochs: 3\n"
        "image_size: 64\nhidden_size: 16\nfusion_layers: 1\n"
    )
    result = train("--config", config, "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 1
    assert json.loads((out / "last" / "config.json").read_text())["hidden_size"] == 16


@pytest.mark.parametrize(("schedule", "held"), [("stable-decay", True), ("cosine", False)])
def test_stable_decay_holds_the_peak_rate_then_decays(synth, tmp_path, schedule, held):
    out = tmp_path / "run"
    result = train("--data", synth / "train.jsonl", "--out", out, "--preset", "synthetic-cpu",
                   *TINY, "--epochs", "3", "--lr", "0.001", "--lr-schedule", schedule)  # fmt: skip
    assert result.exit_code == 0, result.output
    rates = [float(row["lr"]) for row in csv.DictReader((out / "metrics.csv").open())]
    if held:  # until 70% of the run
        assert rates[0] == rates[1] == pytest.approx(0.001)
        assert rates[2] < rates[1]
    else:
        assert 0.001 > rates[0] > rates[1] > rates[2]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "nonsense"], "unknown preset"),
        (["--preset", "concat-glove"], "word-vectors"),
        (["--data", "missing.jsonl"], "missing.jsonl"),
        (["--resume"], "nothing to resume"),
        (["--lr-schedule", "linear"], "lr_schedule must be one of cosine, stable-decay"),
    ],
)
def test_bad_options_are_one_line_errors(synth, tmp_path, extra, message):
    args = ["--data", synth / "train.jsonl", "--out", tmp_path / "run", *TINY, *extra]
    result = train(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_yaml_is_a_one_line_error(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("data: [unclosed\n")
    result = train("--config", config)
    assert result.exit_code == 2 and "not valid YAML" in result.output


def test_two_processes_share_the_data_and_end_identical(synth, tmp_path):
    """`accelerate launch` of two processes on CPUs (gloo): each takes its own share."""
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "sceneloc", "train", "--data", str(synth / "train.jsonl"), "--out", str(out),
        "--epochs", "1", "--preset", "synthetic-cpu", *TINY,
    ]  # fmt: skip
    done = _run_process_group(command, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / "ranks" / f"rank{i}.json").read_text()) for i in (0, 1)]
    images = len({json.loads(line)["image"] for line in (synth / "train.jsonl").open()})
    assert {r["world_size"] for r in ranks} == {2}
    assert all(r["queries_seen"] > 0 for r in ranks)
    # Each process takes half the images (Accelerate pads the last batch to even counts).
    assert all(r["batches_per_epoch"] == -(-images // (2 * 4)) for r in ranks)
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]


def _run_process_group(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run the launcher in its own session; on timeout kill it and its workers, show output."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"launcher timed out after {timeout} s\n{stdout[-2000:]}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_a_finished_run_is_not_overwritten_without_resume(synth, tmp_path):
    common = ["--data", synth / "train.jsonl", "--out", tmp_path / "run", "--epochs", "1",
              "--preset", "synthetic-cpu", *TINY]  # fmt: skip
    assert train(*common).exit_code == 0
    again = train(*common)
    assert again.exit_code == 2 and "--resume" in again.output


def test_yaml_values_are_read_as_their_option_types(synth, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(f"data: {synth / 'train.jsonl'}\nout: {tmp_path / 'run'}\nlr: 3e-4\n"
                      "epochs: one\n")  # fmt: skip
    result = train("--config", config)
    assert result.exit_code == 2 and "'epochs' must be int" in result.output


def test_the_library_reports_progress_to_a_callback(synth, tmp_path):
    """`sceneloc.training.train` draws nothing; each step reaches the callback, in order."""
    options = NativeOptions.build(
        "synthetic-cpu", data=str(synth / "train.jsonl"), out=str(tmp_path / "run"), epochs=2,
        image_size=64, hidden_size=16, fusion_layers=1, batch_size=4,
    )  # fmt: skip
    seen: list[TrainingProgress] = []
    records = training.train(options, progress=seen.append)
    assert [p.step for p in seen] == list(range(records[-1].step + 1))
    assert {p.total_steps for p in seen} == {records[-1].step}
    assert [p.epoch for p in seen[1:]] == [1] * records[0].step + [2] * records[0].step
    assert all(math.isfinite(p.loss) for p in seen[1:])


def test_gradient_accumulation_and_precision_reach_the_loop(synth, tmp_path):
    """`--grad-accum 2` halves the optimizer steps (an epoch's odd batch is a step too)."""
    out = tmp_path / "run"
    result = train("--data", synth / "train.jsonl", "--out", out, "--epochs", "1",
                   "--preset", "synthetic-cpu", *TINY, "--batch-size", "1", "--grad-accum", "2",
                   "--precision", "fp32")  # fmt: skip
    assert result.exit_code == 0, result.output
    options = json.loads((out / "options.json").read_text())
    assert options["grad_accum"] == 2 and options["precision"] == "fp32"
    images = len({json.loads(line)["image"] for line in (synth / "train.jsonl").open()})
    steps = int(next(csv.DictReader((out / "metrics.csv").open()))["step"])
    assert steps == -(-images // 2)
