"""``sceneloc evaluate --task describe`` on synthetic references: captions from files, a
listener finding them again, saved predictions, reports and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sceneloc
from sceneloc.cli import app
from sceneloc.data import read_samples
from sceneloc.data.format import Sample, write_samples
from sceneloc.data.synth import SHAPES, generate
from sceneloc.evaluation import evaluate_model, read_regions

runner = CliRunner()

SMALL = {"size": 256, "min_objects": 8, "max_objects": 14, "queries_per_image": 6}
METRICS = {"n", "bleu1", "bleu2", "bleu3", "bleu4", "cider", "meteor"}


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("described")
    generate(out, 5, seed=3, splits="train=0.6,test=0.4", **SMALL)
    return out / "descriptions.jsonl"


def write_predictions(path: Path, references: Path, caption) -> Path:
    """One prediction per region of ``references``: ``caption(region)``."""
    regions = read_regions(read_samples(references))
    lines = [{"image": r.image, "box": r.box, "caption": caption(r)} for r in regions]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def first_reference(region) -> str:
    return region.references[0]


def evaluate(*args) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, ["evaluate", "--task", "describe", "--no-meteor", *map(str, args)])
    output = json.loads(result.stdout) if result.exit_code == 0 and "--json" in args else None
    return result.exit_code, output, result.stderr


def test_perfect_captions_are_exact_and_match_their_references(references, tmp_path):
    predictions = write_predictions(tmp_path / "p.jsonl", references, first_reference)
    code, metrics, _ = evaluate("--data", references, "--predictions", predictions, "--json")
    assert code == 0
    assert set(metrics) == METRICS | {"exact", "by_type", "seconds_per_region"}
    assert metrics["n"] == len(read_regions(read_samples(references)))
    assert metrics["exact"] == 1.0 and metrics["meteor"] is None
    for n in (1, 2, 3, 4):
        assert metrics[f"bleu{n}"] == pytest.approx(1.0)
    assert set(metrics["by_type"]) == {s.type for s in read_samples(references)}
    assert all(group["exact"] == 1.0 for group in metrics["by_type"].values())


def test_shape_only_captions_score_lower(references, tmp_path):
    perfect = write_predictions(tmp_path / "p.jsonl", references, first_reference)
    shapes = {(s.image, tuple(s.box)): s.category for s in read_samples(references)}
    shapes = write_predictions(  # the target's shape, a group's first: "The star."
        tmp_path / "s.jsonl", references, lambda r: f"The {shapes[r.image, tuple(r.box)]}."
    )
    _, good, _ = evaluate("--data", references, "--predictions", perfect, "--json")
    code, bad, _ = evaluate("--data", references, "--predictions", shapes, "--json")
    assert code == 0
    assert bad["exact"] == 0.0  # every target has a same-shape distractor
    assert {json.loads(line)["caption"][4:-1] for line in shapes.read_text().splitlines()} <= set(
        SHAPES
    )
    for name in ("bleu1", "bleu4", "cider"):
        assert bad[name] < good[name], name


def test_listener_round_trip_is_its_accuracy_on_the_captions(references, tmp_path):
    predictions = write_predictions(tmp_path / "p.jsonl", references, first_reference)
    listener = ["--listener", "native-synth", "--device", "cpu"]
    code, metrics, _ = evaluate("--data", references, "--predictions", predictions, *listener,
                                "--json")  # fmt: skip
    assert code == 0
    # the same captions as locate queries of their regions, scored as any grounder is
    queries = tmp_path / "queries.jsonl"
    write_samples(queries, [
        Sample(id=str(i), image=r.image, query=r.references[0], box=r.box, split=r.split)
        for i, r in enumerate(read_regions(read_samples(references)))
    ])  # fmt: skip
    shutil.copytree(references.parent / "images", tmp_path / "images")
    grounder = sceneloc.load("native-synth", device="cpu")
    accuracy = evaluate_model(queries, grounder).to_dict()["acc@0.5"]
    assert metrics["roundtrip@0.5"] == pytest.approx(accuracy)
    assert metrics["roundtrip@0.5"] > 0 and all(
        "roundtrip@0.5" in group for group in metrics["by_type"].values()
    )


def test_saved_predictions_score_the_same(references, tmp_path):
    predictions = write_predictions(tmp_path / "p.jsonl", references, lambda r: r.references[-1])
    saved = tmp_path / "saved" / "again.jsonl"
    _, first, _ = evaluate("--data", references, "--predictions", predictions,
                           "--save-predictions", saved, "--json")  # fmt: skip
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert set(lines[0]) == {"image", "box", "caption", "score"} and len(lines) == first["n"]
    _, again, _ = evaluate("--data", references, "--predictions", saved, "--json")
    first.pop("seconds_per_region"), again.pop("seconds_per_region")
    assert again == first


def test_report_split_and_plain_references(references, tmp_path):
    predictions = write_predictions(tmp_path / "p.jsonl", references, first_reference)
    report = tmp_path / "report"
    code, metrics, _ = evaluate("--data", references, "--predictions", predictions,
                                "--report", report, "--split", "test", "--json")  # fmt: skip
    assert code == 0
    test_regions = {(r.image, tuple(r.box)) for r in read_regions(read_samples(references), "test")}
    assert metrics["n"] == len(test_regions)
    assert json.loads((report / "metrics.json").read_text()) == metrics
    assert "## By reference type" in (report / "report.md").read_text()
    plain = tmp_path / "plain" / "references.jsonl"  # no scenes.jsonl beside: nothing is exact
    plain.parent.mkdir()
    shutil.copy(references, plain)
    code, metrics, _ = evaluate("--data", plain, "--predictions", predictions, "--json")
    assert code == 0 and "exact" not in metrics and metrics["bleu1"] == pytest.approx(1.0)
    scenes = references.parent / "scenes.jsonl"
    _, metrics, _ = evaluate("--data", plain, "--predictions", predictions, "--scenes", scenes,
                             "--json")  # fmt: skip
    assert metrics["exact"] == 1.0  # the images resolve against --data's folder, as listed
    result = runner.invoke(app, ["evaluate", "--task", "describe", "--no-meteor", "--data",
                                 str(plain), "--predictions", str(predictions)])  # fmt: skip
    assert result.exit_code == 0 and "by reference type" in result.stdout


def test_locate_split_filter(references):
    annotations = references.parent / "annotations.jsonl"
    result = runner.invoke(app, ["evaluate", "--data", str(annotations), "--baseline",
                                 "random-object", "--split", "test", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = sum(1 for s in read_samples(annotations) if s.split == "test")
    assert json.loads(result.stdout)["n"] == expected > 0


def test_bad_inputs_one_line_exit_2(references, tmp_path):
    regions = read_regions(read_samples(references))
    good = write_predictions(tmp_path / "p.jsonl", references, first_reference)
    lines = good.read_text().splitlines()
    missing = tmp_path / "missing.jsonl"
    missing.write_text("\n".join(lines[1:]) + "\n")
    twice = tmp_path / "twice.jsonl"
    twice.write_text("\n".join([*lines, lines[0]]) + "\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(lines[0] + "\n" + json.dumps({"image": "x.png", "box": [1, 2, 3]}) + "\n")
    cases = [
        (["--predictions", missing], f"no caption for 1 of {len(regions)} regions (first: "),
        (["--predictions", twice], f"twice.jsonl:{len(lines) + 1}: region {regions[0].image}"),
        (["--predictions", broken], "broken.jsonl:2: missing field(s) caption"),
        (["--predictions", good, "--model", "native-synth"], "exactly one of --model or"),
        ([], "exactly one of --model or --predictions"),
        (["--predictions", good, "--baseline", "random-object"], "--baseline is for --task locate"),
        (["--predictions", good, "--split", "nope"], "no regions of split 'nope'"),
    ]
    for extra, message in cases:
        code, _, stderr = evaluate("--data", references, *extra)
        assert code == 2, (extra, stderr)
        assert message in " ".join(stderr.split()), (message, stderr)
        assert len(stderr.strip().splitlines()) == 1, stderr
    result = runner.invoke(app, ["evaluate", "--task", "caption", "--data", str(references),
                                 "--predictions", str(good)])  # fmt: skip
    assert result.exit_code == 2 and "unknown task 'caption'" in result.stderr
    result = runner.invoke(app, ["evaluate", "--data", str(references), "--predictions", str(good),
                                 "--listener", "native-synth"])  # fmt: skip
    assert result.exit_code == 2 and "--listener is for --task describe" in result.stderr


def test_a_no_target_sample_is_no_region_to_describe():
    """gRefCOCO-style data (a description of nothing there) still gives the other regions."""
    samples = [
        Sample("a", "x.png", "the red circle", [1.0, 2.0, 30.0, 40.0], "test"),
        Sample("b", "x.png", "the blue star", None, "test", boxes=[]),
    ]
    regions = read_regions(samples)
    assert [(r.box, r.references) for r in regions] == [
        ([1.0, 2.0, 30.0, 40.0], ("the red circle",))
    ]
