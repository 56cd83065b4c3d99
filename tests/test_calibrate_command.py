"""Calibrated "not there": fitted on validation scenes, saved, loaded and used by every
command; bad calibration files refused in one line."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import sceneloc
from sceneloc.calibration import (
    CALIBRATION_FILE,
    CalibratedBackend,
    Calibration,
    fit_calibration,
    platt,
    roc_auc,
    write_calibrated,
)
from sceneloc.cli import app
from sceneloc.data import read_samples
from sceneloc.data.synth import generate
from sceneloc.errors import CalibrationError
from sceneloc.evaluation import evaluate_model
from sceneloc.registry import resolve
from sceneloc.server.app import create_app

runner = CliRunner()
#: Presence weights that keep every query at 0.5 (sigmoid of a tenth of the presence logit
#: plus 3): the bundled model's head, trained on absent queries, refuses them by itself.
UNCALIBRATED = [0.1, 0.0, 3.0]


@pytest.fixture(scope="module")
def uncalibrated(tmp_path_factory) -> Path:
    """The bundled model with its presence score shifted up: it refuses nothing at 0.5."""
    copy = tmp_path_factory.mktemp("models") / "uncalibrated"
    shutil.copytree(resolve("native-synth").checkpoint, copy)
    config = json.loads((copy / "config.json").read_text())
    config["presence_calibration"] = UNCALIBRATED
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    """Validation and test scenes of two seeds."""
    folders = {}
    for split, seed in (("val", 41), ("test", 42)):
        folder = tmp_path_factory.mktemp(split)
        generate(folder, num_images=8, seed=seed, size=320, min_objects=10, max_objects=20,
                 splits=f"{split}=1")  # fmt: skip
        folders[split] = folder / "annotations.jsonl"
    return folders


@pytest.fixture(scope="module")
def platt_dir(uncalibrated, scenes, tmp_path_factory) -> Path:
    """``sceneloc calibrate --method platt`` of the uncalibrated copy."""
    out = tmp_path_factory.mktemp("calibrated") / "platt"
    result = runner.invoke(app, ["calibrate", "--model", str(uncalibrated), "--data",
                                 str(scenes["val"]), "--out", str(out), "--method", "platt",
                                 "--device", "cpu"], env={"COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "absent refused" in result.stdout and "calibrated model directory" in result.stdout
    return out


def test_calibrate_writes_a_model_directory_with_its_calibration_and_report(
    platt_dir, uncalibrated, scenes
):
    assert {p.name for p in uncalibrated.iterdir()} <= {p.name for p in platt_dir.iterdir()}
    record = json.loads((platt_dir / CALIBRATION_FILE).read_text())
    assert record["method"] == "platt" and record["parameters"]["slope"] > 0
    assert (record["model"], record["family"]) == (str(uncalibrated), "native")
    assert record["data_sha256"] == hashlib.sha256(scenes["val"].read_bytes()).hexdigest()
    figures = record["figures"]
    assert figures["queries"]["present"] == figures["queries"]["absent"] > 0
    # the shifted score keeps every absent query at 0.5; calibrated, most are refused
    assert figures["after"]["absent_refused"] > figures["before"]["absent_refused"] + 0.5
    assert json.loads((platt_dir / "report.json").read_text()) == record
    assert "absent refused" in (platt_dir / "report.md").read_text()
    assert Calibration.read(platt_dir / CALIBRATION_FILE).to_dict() == record


def test_a_calibrated_model_scores_with_the_fitted_map_and_threshold_half(
    platt_dir, uncalibrated, scenes
):
    calibration = Calibration.read(platt_dir / CALIBRATION_FILE)
    raw = sceneloc.load(str(uncalibrated), device="cpu")
    beside = sceneloc.load(
        str(uncalibrated), device="cpu", calibration=platt_dir / "calibration.json"
    )
    directory = sceneloc.load(str(platt_dir), device="cpu")
    assert isinstance(directory.backend, CalibratedBackend)
    assert beside.backend.default_threshold == directory.backend.default_threshold == 0.5
    sample = next(read_samples(scenes["test"]))
    image = sample.image_path(scenes["test"].parent)
    queries = [sample.query, "the pink cross", "the orange star"]
    before = raw.locate(image, queries, threshold=0.0)
    for grounder in (beside, directory):
        after = grounder.locate(image, queries, threshold=0.0)
        for old, new in zip(before, after):
            assert np.allclose(new.candidates.scores, platt(old.candidates.scores,
                                                            calibration.slope,
                                                            calibration.intercept))  # fmt: skip
            assert np.array_equal(new.candidates.boxes, old.candidates.boxes)
        by_default = grounder.locate(image, queries)
        assert [r.found for r in by_default] == [r.score >= 0.5 for r in after]


def test_presence_method_refits_the_native_models_own_score(uncalibrated, scenes, tmp_path):
    grounder = sceneloc.load(str(uncalibrated), device="cpu")
    calibration = fit_calibration(grounder, scenes["val"])  # auto: the native presence score
    assert calibration.method == "presence"
    assert write_calibrated(calibration, str(uncalibrated), tmp_path / "out") is None
    weights = json.loads((tmp_path / "out" / "config.json").read_text())["presence_calibration"]
    assert weights == calibration.parameters["presence_calibration"] != UNCALIBRATED
    source = json.loads((uncalibrated / "config.json").read_text())["presence_calibration"]
    assert source == UNCALIBRATED  # the copy's config is its own file, not a hard link
    assert not (tmp_path / "out" / CALIBRATION_FILE).exists()
    served = sceneloc.load(str(tmp_path / "out"), device="cpu")
    assert not isinstance(served.backend, CalibratedBackend)  # the model scores by itself
    after = calibration.figures["after"]
    assert after["absent_refused"] > calibration.figures["before"]["absent_refused"] + 0.5
    assert after["present_kept"] > 0.5


def test_calibration_on_locate_batch_and_evaluate(platt_dir, uncalibrated, scenes, tmp_path):
    file = platt_dir / CALIBRATION_FILE
    calibrated = sceneloc.load(str(uncalibrated), device="cpu", calibration=file)
    sample = next(read_samples(scenes["test"]))
    image = sample.image_path(scenes["test"].parent)
    common = ["--model", str(uncalibrated), "--calibration", str(file), "--device", "cpu"]
    located = runner.invoke(app, ["locate", str(image), "-q", sample.query, *common, "--json"])
    assert located.exit_code == 0, located.output
    expected = calibrated.locate(image, [sample.query]).to_dict()
    assert json.loads(located.stdout)["results"] == expected["results"]

    out = tmp_path / "results.jsonl"
    batched = runner.invoke(app, ["batch", "--images", str(image), "-q", sample.query,
                                  "--out", str(out), "--threshold", "0", *common])  # fmt: skip
    assert batched.exit_code == 0, batched.output
    answer = json.loads(out.read_text().splitlines()[0])
    everything = calibrated.locate(image, [sample.query], threshold=0.0).to_dict()
    assert answer["score"] == everything["results"][0]["score"]
    assert answer["candidates"] == everything["results"][0]["candidates"]

    evaluated = runner.invoke(app, ["evaluate", "--data", str(scenes["test"]), "--threshold",
                                    "0.5", "--json", *common])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    metrics = evaluate_model(scenes["test"], calibrated, threshold=0.5).to_dict()
    assert json.loads(evaluated.stdout)["acc@0.5"] == metrics["acc@0.5"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the calibration file"),
        ("{not json", "not JSON"),
        ('{"slope": 1}', "not a calibration file written by"),
        ('{"format": "sceneloc-calibration", "version": 1, "method": "platt", '
         '"parameters": {"slope": 1}}', "malformed calibration"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["locate", "batch", "evaluate", "serve"])
def test_bad_calibration_file_exits_2_with_one_line(
    command, content, message, uncalibrated, scenes, tmp_path
):
    file = tmp_path / "calibration.json"
    if content is not None:
        file.write_text(content)
    image = next(read_samples(scenes["test"])).image_path(scenes["test"].parent)
    given = {
        "locate": ["locate", str(image), "-q", "the red circle"],
        "batch": ["batch", "--images", str(image), "-q", "x", "--out", str(tmp_path / "o.jsonl")],
        "evaluate": ["evaluate", "--data", str(scenes["test"])],
        "serve": ["serve", "--port", "0"],
    }[command]
    result = runner.invoke(app, [*given, "--model", str(uncalibrated), "--calibration",
                                 str(file), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_calibration_of_another_family_is_refused(platt_dir, grounding_dino_dir):
    with pytest.raises(CalibrationError, match="a native model"):
        sceneloc.load(str(grounding_dino_dir), calibration=platt_dir / CALIBRATION_FILE)


def test_only_a_native_model_has_a_presence_score_to_refit(grounding_dino_dir, scenes, tmp_path):
    result = runner.invoke(app, ["calibrate", "--model", str(grounding_dino_dir), "--data",
                                 str(scenes["val"]), "--out", str(tmp_path / "out"),
                                 "--method", "presence", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 2
    assert "use auto, platt" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("data", "model", "message"),
    [
        ("empty", "{model}", "has no samples"),
        ("missing", "{model}", "data file not found"),
        ("one-image", "{model}", "no absent query"),
        ("val", "/no/such/model", "model directory not found"),
        ("val", "{model}", "already holds other files"),
    ],
)
def test_calibrate_bad_input_exits_2_with_one_line(
    data, model, message, uncalibrated, scenes, tmp_path
):
    files = {"empty": tmp_path / "empty.jsonl", "missing": tmp_path / "none.jsonl",
             "one-image": tmp_path / "one.jsonl", "val": scenes["val"]}  # fmt: skip
    files["empty"].write_text("")
    first = [s for s in read_samples(scenes["val"])]
    one = [s.to_dict() | {"image": str(s.image_path(scenes["val"].parent))}
           for s in first if s.image == first[0].image]  # fmt: skip
    files["one-image"].write_text("".join(json.dumps(r) + "\n" for r in one))
    out = tmp_path / "out"
    if message == "already holds other files":
        out.mkdir()
        (out / "mine.txt").write_text("keep me")
    result = runner.invoke(app, ["calibrate", "--model", model.format(model=uncalibrated),
                                 "--data", str(files[data]), "--out", str(out),
                                 "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_beside_a_hub_model_only_the_calibration_and_report_are_written(platt_dir, tmp_path):
    calibration = Calibration.read(platt_dir / CALIBRATION_FILE)
    path = write_calibrated(calibration, "IDEA-Research/grounding-dino-tiny", tmp_path / "out")
    assert path == tmp_path / "out" / CALIBRATION_FILE
    assert sorted(p.name for p in path.parent.iterdir()) == [
        CALIBRATION_FILE, "report.json", "report.md",
    ]  # fmt: skip
    assert Calibration.read(path) == calibration


def test_roc_auc_counts_pairs_and_half_ties():
    # pairs (0.9, 0.5) (0.9, 0.1) (0.5, 0.1) won, (0.5, 0.5) tied: 3.5 of 4
    assert roc_auc(np.array([0.9, 0.5]), np.array([0.5, 0.1])) == 0.875
    assert roc_auc(np.array([0.2]), np.array([0.3, 0.4])) == 0.0


def test_the_server_answers_with_calibrated_scores(platt_dir, uncalibrated, scenes):
    calibrated = sceneloc.load(str(uncalibrated), device="cpu",
                               calibration=platt_dir / CALIBRATION_FILE)  # fmt: skip
    sample = next(read_samples(scenes["test"]))
    image = sample.image_path(scenes["test"].parent)
    with TestClient(create_app(calibrated)) as client:
        models = client.get("/v1/models").json()["models"]
        response = client.post("/v1/locate", files={"image": ("scene.png", image.read_bytes())},
                               data={"queries": [sample.query], "threshold": "0"})  # fmt: skip
    assert models[0]["default_threshold"] == 0.5
    assert response.status_code == 200, response.text
    expected = calibrated.locate(image, [sample.query], threshold=0.0).to_dict()
    assert response.json()["results"] == expected["results"]


def test_a_files_own_no_target_queries_count_as_absent(uncalibrated, tmp_path):
    """Data with ``absent`` samples (no box) calibrates on those as its absent queries (none
    made beside them: the file shows what absence looks like in it), and only the queries
    with a target count as present."""
    from sceneloc.calibration import query_scores
    from sceneloc.data.synth import make_domain

    generate(tmp_path, num_images=4, seed=43, size=320, min_objects=10, max_objects=20,
             splits="val=1", domain=make_domain(query_types="attribute,absent"))  # fmt: skip
    samples = list(read_samples(tmp_path / "annotations.jsonl"))
    with_target = sum(sample.box is not None for sample in samples)
    assert 0 < with_target < len(samples)
    scores = query_scores(sceneloc.load(str(uncalibrated), device="cpu"),
                          tmp_path / "annotations.jsonl")  # fmt: skip
    assert len(scores.present) == len(scores.right_box) == with_target
    assert len(scores.absent) == len(samples) - with_target
