"""``sceneloc evaluate`` end to end: prediction files, models, baselines, reports, bad input."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import draw_scene
from sceneloc import Candidates, LocateAnswer, LocateResult
from sceneloc.cli import app
from sceneloc.data.format import Sample
from sceneloc.evaluation import evaluate_model, evaluate_predictions

runner = CliRunner()

RED, GREEN, BLUE = [10.0, 10.0, 50.0, 60.0], [70.0, 20.0, 110.0, 70.0], [120.0, 50.0, 150.0, 80.0]
JSON_KEYS = {"n", "acc@0.5", "acc@0.75", "miou", "by_type", "by_split", "seconds_per_sample"}
RECALL_KEYS = {"recall@1", "recall@5", "recall@10"}
#: Shown because one sample has several targets.
TARGET_KEYS = {"precision@f1=1", "n-acc", "t-acc"}


def accuracy(groups: dict) -> dict:
    """Each group's ``n``, accuracies and mIoU (without the target metrics)."""
    return {
        name: {k: v for k, v in m.items() if k not in TARGET_KEYS} for name, m in groups.items()
    }


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two drawn scenes and four samples, one of them with several target boxes."""
    folder = tmp_path_factory.mktemp("dataset")
    (folder / "images").mkdir()
    for name in ("a.png", "b.png"):
        draw_scene().save(folder / "images" / name)
    return write_jsonl(folder / "samples.jsonl", [
        {"id": "s1", "image": "images/a.png", "query": "the red square", "box": RED,
         "split": "test", "type": "attribute"},
        {"id": "s2", "image": "images/a.png", "query": "the green circle", "box": GREEN,
         "split": "test", "type": "spatial"},
        {"id": "s3", "image": "images/b.png", "query": "the blue triangle", "box": BLUE,
         "split": "val", "type": "attribute"},
        {"id": "s4", "image": "images/a.png", "query": "the red and green shapes",
         "box": [10.0, 10.0, 110.0, 70.0], "boxes": [RED, GREEN], "split": "val",
         "type": "multi"},
    ])  # fmt: skip


@pytest.fixture
def predictions(tmp_path) -> Path:
    return write_jsonl(tmp_path / "predictions.jsonl", [
        {"id": "s1", "box": RED},  # IoU 1
        {"id": "s2", "box": [70.0, 20.0, 150.0, 70.0]},  # twice as wide as the target: IoU 0.5
        {"id": "s3", "box": None},  # nothing found: IoU 0; s4 has no prediction: IoU 0
    ])  # fmt: skip


def evaluate(*args: str):
    return runner.invoke(app, ["evaluate", *map(str, args)])


def run_json(*args) -> dict:
    result = evaluate(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # stdout holds the JSON object and nothing else


def test_predictions_file_json(dataset, predictions):
    metrics = run_json("--data", dataset, "--predictions", predictions)
    assert set(metrics) == JSON_KEYS | TARGET_KEYS  # no candidates given: no recall@k
    assert metrics["n"] == 4
    # s1 and s2 each found their one target; s3 found nothing, s4 has no prediction
    assert metrics["precision@f1=1"] == 0.5 and metrics["t-acc"] == 0.5
    assert metrics["n-acc"] is None  # no sample without a target
    assert metrics["acc@0.5"] == 0.5
    assert metrics["acc@0.75"] == 0.25
    assert metrics["miou"] == pytest.approx(1.5 / 4)
    assert accuracy(metrics["by_type"]) == {
        "attribute": {"n": 2, "acc@0.5": 0.5, "acc@0.75": 0.5, "miou": 0.5},
        "multi": {"n": 1, "acc@0.5": 0.0, "acc@0.75": 0.0, "miou": 0.0},
        "spatial": {"n": 1, "acc@0.5": 1.0, "acc@0.75": 0.0, "miou": 0.5},
    }
    assert accuracy(metrics["by_split"])["test"] == {
        "n": 2,
        "acc@0.5": 1.0,
        "acc@0.75": 0.5,
        "miou": 0.75,
    }
    assert metrics["by_split"]["val"]["n"] == 2 and metrics["by_split"]["val"]["miou"] == 0.0
    assert metrics["seconds_per_sample"] >= 0


def test_predictions_with_candidates_give_recall(dataset, tmp_path):
    far = [0.0, 0.0, 5.0, 5.0]
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "s1", "box": far, "candidates": [{"box": far, "score": 0.9},
                                                {"box": RED, "score": 0.5}]},
        {"id": "s4", "box": GREEN, "candidates": [{"box": GREEN, "score": 0.8}]},
    ])  # fmt: skip
    metrics = run_json("--data", dataset, "--predictions", path)
    assert set(metrics) == JSON_KEYS | RECALL_KEYS | TARGET_KEYS
    assert metrics["recall@1"] == 0.25  # s4 at rank 1
    assert metrics["recall@5"] == metrics["recall@10"] == 0.5  # and s1 at rank 2
    assert metrics["acc@0.5"] == 0.25


def test_limit_and_table_output(dataset, predictions):
    assert run_json("--data", dataset, "--predictions", predictions, "--limit", "2")["n"] == 2
    result = evaluate("--data", dataset, "--predictions", predictions)
    assert result.exit_code == 0, result.output
    for text in ("acc@0.5", "miou", "attribute", "spatial", "val"):
        assert text in result.stdout


def test_unknown_prediction_ids_are_a_warning(dataset, tmp_path, caplog):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "s1", "box": RED}, {"id": "zz", "box": None}])
    result = evaluate_predictions(dataset, path)
    assert result.n == 4 and result.ious[0] == 1.0
    assert "ids not in the data" in caplog.text and "'zz'" in caplog.text


def test_report_folder(dataset, predictions, tmp_path):
    out = tmp_path / "report"
    metrics = run_json("--data", dataset, "--predictions", predictions, "--report", out)
    names = {"metrics.json", "report.md", "iou_histogram.png", "accuracy_by_type.png",
             "accuracy_by_size.png"}  # fmt: skip
    assert {p.name for p in out.iterdir()} == names
    saved = json.loads((out / "metrics.json").read_text())
    assert saved.pop("seconds_per_sample") >= 0
    assert saved == {k: v for k, v in metrics.items() if k != "seconds_per_sample"}
    for name in names:
        if name.endswith(".png"):
            with Image.open(out / name) as image:
                image.verify()
                assert image.format == "PNG"
    markdown = (out / "report.md").read_text()
    assert "## By target size" in markdown and "![iou_histogram.png](iou_histogram.png)" in markdown
    # In the 160x96 scene the triangle's side is sqrt(900 / 15360) ~ 0.24 of the image's.
    assert "| medium | 1 |" in markdown and "| large | 3 |" in markdown


def test_model_run_and_rescoring_saved_predictions(dataset, grounding_dino_dir, tmp_path):
    saved = tmp_path / "saved.jsonl"
    metrics = run_json("--data", dataset, "--model", grounding_dino_dir, "--threshold", "0",
                       "--device", "cpu", "--dtype", "float32", "--batch-size", "2",
                       "--save-predictions", saved)  # fmt: skip
    assert set(metrics) == JSON_KEYS | RECALL_KEYS | TARGET_KEYS  # multi-box targets
    assert metrics["n"] == 4
    assert metrics["seconds_per_sample"] > 0
    records = [json.loads(line) for line in saved.read_text().splitlines()]
    assert [r["id"] for r in records] == ["s1", "s2", "s3", "s4"]
    assert all(len(r["candidates"]) <= 10 for r in records)
    rescored = run_json("--data", dataset, "--predictions", saved)
    for key in ("n", "acc@0.5", "acc@0.75", "miou", "by_type", "by_split", *RECALL_KEYS):
        assert rescored[key] == metrics[key]


class CountingGrounder:
    """Stands in for a Grounder and records each ``locate`` call."""

    name = "counting"

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    backend = SimpleNamespace(default_threshold=0.5)

    def locate(self, image, queries, threshold=None, top_k=5):
        self.calls.append((Path(image).name, len(queries)))
        picture = Image.new("RGB", (160, 96))
        results = tuple(LocateResult(q, Candidates.empty(), picture) for q in queries)
        return LocateAnswer(picture, results, model=self.name)


def test_images_are_opened_once_per_group(dataset, tmp_path):
    rows = ["a.png"] * 3 + ["b.png"] + ["a.png"]
    samples = [Sample(id=str(i), image=f"images/{name}", query="q", box=RED, split="test")
               for i, name in enumerate(rows)]  # fmt: skip
    grounder = CountingGrounder()
    result = evaluate_model(samples, grounder, root=dataset.parent, batch_size=2)
    assert grounder.calls == [("a.png", 2), ("a.png", 1), ("b.png", 1), ("a.png", 1)]
    assert result.n == 5


def test_evaluation_streams_its_samples(dataset):
    endless = (Sample(id=str(i), image="images/a.png", query="q", box=RED, split="test")
               for i in itertools.count())  # fmt: skip
    grounder = CountingGrounder()
    result = evaluate_model(endless, grounder, root=dataset.parent, batch_size=16, limit=40)
    assert result.n == 40
    assert grounder.calls == [("a.png", 16), ("a.png", 16), ("a.png", 8)]


CIRCLE_A, CIRCLE_B = [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]
SQUARES = [[20.0, 20.0, 30.0, 30.0], [40.0, 40.0, 45.0, 45.0]]


@pytest.fixture
def synthetic(tmp_path) -> Path:
    """A hand-made synthetic dataset: scenes.jsonl and samples (no images are needed)."""

    def obj(index, shape, box):
        return {"id": index, "shape": shape, "color": "red", "size": "small", "box": box}

    write_jsonl(tmp_path / "scenes.jsonl", [
        {"image": "images/000000.png", "image_id": "000000", "width": 100, "height": 100,
         "split": "test", "objects": [obj(0, "circle", CIRCLE_A), obj(1, "square", SQUARES[0]),
                                      obj(2, "circle", CIRCLE_B), obj(3, "square", SQUARES[1])]},
        {"image": "images/000001.png", "image_id": "000001", "width": 100, "height": 100,
         "split": "test", "objects": [obj(0, "square", SQUARES[0]), obj(1, "circle", CIRCLE_A),
                                      obj(2, "square", SQUARES[1])]},
    ])  # fmt: skip
    samples = [
        {"id": f"{image}-{i}", "image": f"images/00000{image}.png", "image_id": f"00000{image}",
         "query": "the circle", "box": CIRCLE_A, "split": "test", "category": "circle"}
        for image in (0, 1) for i in range(20)
    ]  # fmt: skip
    write_jsonl(tmp_path / "one-circle.jsonl", [s for s in samples if s["image_id"] == "000001"])
    return write_jsonl(tmp_path / "annotations.jsonl", samples)


def picks(path: Path) -> list[list[float]]:
    return [json.loads(line)["box"] for line in path.read_text().splitlines()]


def test_same_shape_baseline_picks_only_that_shape(synthetic, tmp_path):
    one_circle = synthetic.parent / "one-circle.jsonl"
    metrics = run_json("--data", one_circle, "--baseline", "same-shape", "--seed", "3")
    assert metrics["acc@0.5"] == 1.0 and metrics["miou"] == 1.0
    saved = tmp_path / "picks.jsonl"
    run_json("--data", synthetic, "--baseline", "same-shape", "--save-predictions", saved)
    chosen = picks(saved)[:20]  # image 000000 has two circles
    assert all(box in (CIRCLE_A, CIRCLE_B) for box in chosen)
    assert CIRCLE_A in chosen and CIRCLE_B in chosen


def test_random_object_baseline_is_deterministic_for_a_seed(synthetic, tmp_path):
    runs = {}
    for name, seed in (("first", 7), ("again", 7), ("other", 8)):
        path = tmp_path / f"{name}.jsonl"
        scenes = synthetic.parent / "scenes.jsonl"
        run_json("--data", synthetic, "--baseline", "random-object", "--seed", seed,
                 "--scenes", scenes, "--save-predictions", path)  # fmt: skip
        runs[name] = picks(path)
    assert runs["first"] == runs["again"] != runs["other"]
    objects = {0: [CIRCLE_A, CIRCLE_B, *SQUARES], 1: [CIRCLE_A, *SQUARES]}
    for index, box in enumerate(runs["first"]):
        assert box in objects[index // 20]
    assert len({tuple(box) for box in runs["first"][:20]}) > 1


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d, p, t: ["--data", t / "nope.jsonl", "--predictions", p], "data file not found"),
        (lambda d, p, t: ["--data", d, "--predictions", t / "nope.jsonl"], "cannot read"),
        (lambda d, p, t: ["--data", d, "--predictions", p, "--model", "x"],
         "exactly one of --model, --predictions or --baseline (got --model and --predictions)"),
        (lambda d, p, t: ["--data", d], "exactly one of --model, --predictions or --baseline"),
        (lambda d, p, t: ["--data", d, "--baseline", "coin-flip"], "unknown baseline"),
        (lambda d, p, t: ["--data", d, "--baseline", "same-shape"], "scenes file not found"),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2_with_one_line(dataset, predictions, tmp_path, make_args, message):
    result = evaluate(*make_args(dataset, predictions, tmp_path))
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output and result.stdout == ""


def test_malformed_files_name_the_line(dataset, predictions, tmp_path):
    bad_data = tmp_path / "bad.jsonl"
    bad_data.write_text(dataset.read_text() + '{"id": "s5", "image": "images/a.png"}\n')
    result = evaluate("--data", bad_data, "--predictions", predictions)
    assert result.exit_code == 2 and f"{bad_data}:5: missing field(s)" in result.stderr
    duplicated = tmp_path / "dup.jsonl"
    duplicated.write_text(predictions.read_text() + json.dumps({"id": "s2", "box": None}) + "\n")
    result = evaluate("--data", dataset, "--predictions", duplicated)
    assert result.exit_code == 2
    assert f"{duplicated}:4: duplicate id 's2' (first on line 2)" in result.stderr


def test_missing_image_names_the_sample(dataset, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", [
        {"id": "x9", "image": "gone.png", "query": "q", "box": RED, "split": "test"},
    ])  # fmt: skip
    result = evaluate("--data", data, "--model", "/no/model/needed")
    assert result.exit_code == 2
    assert f"sample x9: image not found: {tmp_path / 'gone.png'}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sample_missing_from_scenes_is_an_error(synthetic, tmp_path):
    data = write_jsonl(tmp_path / "other.jsonl", [
        {"id": "q", "image": "images/999.png", "image_id": "999", "query": "q", "box": RED,
         "split": "test", "category": "circle"},
    ])  # fmt: skip
    result = evaluate("--data", data, "--baseline", "random-object")
    assert result.exit_code == 2 and "sample q: its image (999) is not in the scenes file" in (
        result.stderr
    )


def test_empty_data_is_an_error(predictions, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = evaluate("--data", empty, "--predictions", predictions)
    assert result.exit_code == 2 and f"no samples to evaluate in {empty}" in result.stderr


def test_target_metrics_refuse_at_the_models_own_threshold(tmp_path):
    """Top-box accuracy is scored at threshold 0, but N-acc needs refusals: it is the same
    whether the boxes were asked at 0 or at the model's own threshold."""
    import sceneloc
    from sceneloc.data.synth import generate, make_domain

    generate(tmp_path, num_images=4, seed=78, splits="test=1",
             domain=make_domain(query_types="attribute,multiple,absent"))  # fmt: skip
    grounder = sceneloc.load("native-synth", device="cpu")
    data = tmp_path / "annotations.jsonl"
    at_zero = evaluate_model(data, grounder, threshold=0.0).to_dict()
    at_own = evaluate_model(data, grounder, threshold=None).to_dict()
    assert at_zero["n-acc"] is not None and at_zero["n-acc"] > 0
    for key in TARGET_KEYS:
        assert at_zero[key] == at_own[key]
    assert at_zero["acc@0.5"] >= at_own["acc@0.5"]
