"""One wire schema: `locate --json`, the HTTP answer and predictions files share their records."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import sceneloc
from sceneloc.cli import app as cli_app
from sceneloc.data.format import Sample
from sceneloc.demo import DEMO_MODEL, demo_scene
from sceneloc.evaluation import evaluate_model
from sceneloc.schema import LocateRecord, LocateResponse, PredictionRecord
from sceneloc.server import create_app


@pytest.fixture(scope="module")
def grounder() -> sceneloc.Grounder:
    return sceneloc.load(DEMO_MODEL, device="cpu")


@pytest.fixture(scope="module")
def scene():
    return demo_scene()


@pytest.fixture
def scene_path(scene, tmp_path):
    path = tmp_path / "scene.png"
    scene.image.save(path)
    return path


def test_cli_json_is_the_answer_record(grounder, scene, scene_path):
    result = CliRunner().invoke(
        cli_app,
        ["locate", str(scene_path), *(f"--query={q}" for q in scene.queries),
         "--model", DEMO_MODEL, "--device", "cpu", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    answer = grounder.locate(scene_path, scene.queries)
    assert printed == answer.to_dict()
    assert LocateRecord.model_validate(printed).model_dump() == printed
    assert printed["image"]["path"] == str(scene_path)


def test_http_answer_is_the_answer_record_plus_timing(grounder, scene, scene_path):
    with TestClient(create_app(grounder)) as client:
        response = client.post(
            "/v1/locate",
            files={"image": ("scene.png", scene_path.read_bytes(), "image/png")},
            data={"queries": scene.queries},
        )
        openapi = client.get("/openapi.json").json()
    assert response.status_code == 200, response.text
    payload = response.json()
    assert LocateResponse.model_validate(payload).model_dump() == payload
    expected = grounder.locate(scene_path, scene.queries).to_dict()
    assert payload.pop("timing_ms") > 0
    assert payload == expected | {"image": expected["image"] | {"path": "scene.png"}}
    documented = openapi["components"]["schemas"]["LocateResponse"]["properties"]
    assert set(documented) == set(LocateResponse.model_fields)


def test_predictions_file_lines_are_result_records_with_an_id(grounder, scene, scene_path):
    present = [(q, box) for q, box in zip(scene.queries, scene.truths) if box is not None]
    samples = [
        Sample(id=f"s{i}", image=scene_path.name, query=q, box=box, split="test")
        for i, (q, box) in enumerate(present)
    ]
    saved = scene_path.parent / "predictions.jsonl"
    evaluate_model(samples, grounder, root=scene_path.parent, save_predictions=saved)
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    answer = grounder.locate(scene_path, [q for q, _ in present], threshold=0.0, top_k=10)
    for line, sample, result in zip(lines, samples, answer, strict=True):
        assert PredictionRecord.model_validate(line).model_dump() == line
        assert line == {"id": sample.id, **result.to_record(exact=True).model_dump()}
        assert line["query"] == sample.query and line["box"] == result.box


def test_cli_writes_masks_only_when_asked_and_only_from_models_that_segment(
    sam3_dir, scene_path, tmp_path
):
    args = ["locate", str(scene_path), "-q", "the red square", "--model", str(sam3_dir),
            "--device", "cpu", "--threshold", "0", "--json"]  # fmt: skip
    plain = CliRunner().invoke(cli_app, args)
    masked = CliRunner().invoke(cli_app, [*args, "--masks", "--out", str(tmp_path / "out")])
    assert plain.exit_code == 0 and masked.exit_code == 0, masked.output
    answer = sceneloc.load(str(sam3_dir), device="cpu").locate(
        scene_path, "the red square", threshold=0.0
    )
    assert json.loads(plain.stdout) == answer.to_dict()
    printed = json.loads(masked.stdout)
    assert printed == answer.to_dict(masks=True)
    assert LocateRecord.model_validate(printed).model_dump() == printed
    candidates = printed["results"][0]["candidates"]
    assert candidates and all(set(c["mask"]) == {"size", "counts"} for c in candidates)
    crops = sorted((tmp_path / "out").glob("scene.crop*.png"))
    assert [Image.open(p).mode for p in crops] == ["RGBA"]

    refused = CliRunner().invoke(
        cli_app, ["locate", str(scene_path), "-q", "x", "--model", DEMO_MODEL, "--masks"]
    )
    assert refused.exit_code == 2
    assert "gives boxes only" in refused.stderr and "sam3" in refused.stderr
