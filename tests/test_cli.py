"""The command line as a user meets it: table, JSON, --out, and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import sceneloc
from sceneloc.cli import app
from sceneloc.registry import default_model, resolve
from test_images import exif_rotated_jpeg, huge_png_header, png_bytes

runner = CliRunner()


@pytest.fixture(scope="module")
def image_path(scene, tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "scene.png"
    scene.save(path)
    return path


def locate(*args: str):
    return runner.invoke(app, ["locate", *args])


def test_table_output(image_path, grounding_dino_dir):
    result = locate(str(image_path), "-q", "the red square", "-q", "a blue triangle",
                    "--model", str(grounding_dino_dir), "--threshold", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "the red square" in result.stdout and "a blue triangle" in result.stdout
    assert "160x96" in result.stdout


def test_json_is_the_librarys_answer(image_path, grounding_dino_dir):
    queries = ["the red square", "a unicorn"]
    result = locate(str(image_path), "-q", queries[0], "-q", queries[1],
                    "--model", str(grounding_dino_dir), "--json", "--top-k", "2",
                    "--threshold", "0.05", "--device", "cpu", "--dtype", "float32")  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # stdout holds the JSON object and nothing else
    grounder = sceneloc.load(str(grounding_dino_dir), device="cpu", dtype="float32")
    answer = grounder.locate(str(image_path), queries, threshold=0.05, top_k=2)
    assert payload == answer.to_dict()
    assert payload["image"] == {"path": str(image_path), "width": 160, "height": 96}
    assert payload["model"] == str(grounding_dino_dir)
    assert [r["query"] for r in payload["results"]] == queries
    candidates = [c for item in payload["results"] for c in item["candidates"]]
    assert candidates and all(c["score"] >= 0.05 for c in candidates)
    assert all(len(item["candidates"]) <= 2 for item in payload["results"])


def test_out_writes_annotated_image_and_crops(image_path, grounding_dino_dir, tmp_path):
    out = tmp_path / "out"
    model = str(grounding_dino_dir)
    result = locate(str(image_path), "-q", "the red square", "-q", "green circle",
                    "--out", str(out), "--model", model, "--threshold", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "scene.annotated.png",
        "scene.crop01.the-red-square.png",
        "scene.crop02.green-circle.png",
    ]


def test_exif_rotated_jpeg_reports_oriented_size(grounding_dino_dir, scene, tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(exif_rotated_jpeg(scene))
    result = locate(str(path), "-q", "red", "--model", str(grounding_dino_dir), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["image"] | {"path": None} == {
        "path": None, "width": 96, "height": 160,
    }  # fmt: skip


def bad_image(tmp_path, kind: str, scene):
    path = tmp_path / f"{kind}.png"
    if kind == "text":
        path.write_text("not an image at all")
    elif kind == "truncated":
        data = png_bytes(scene.resize((640, 384)))
        path.write_bytes(data[: len(data) // 2])
    elif kind == "bomb":
        path.write_bytes(huge_png_header())
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "image not found"),
        ("text", "not an image"),
        ("truncated", "cannot decode"),
        ("bomb", "pixels"),
    ],
)
def test_bad_images_exit_2_with_one_line(kind, message, scene, tmp_path):
    path = bad_image(tmp_path, kind, scene)
    result = locate(str(path), "-q", "anything", "--model", "/no/model/needed")
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-q", "  "], "empty or blank"),
        (["-q", ""], "empty or blank"),
        (["-q", "x", "--model", "/no/such/model"], "model directory not found"),
        (["-q", "x", "--model", "grounding-dino-tni"], "did you mean"),
        (["-q", "x", "--dtype", "float8"], "unknown dtype"),
        (["-q", "x", "--device", "tpu"], "unknown device"),
        (["-q", "x", "--max-pixels", "65536"], "takes no option max_pixels"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message, image_path, grounding_dino_dir):
    if "--model" not in args:
        args = [*args, "--model", str(grounding_dino_dir)]
    result = locate(str(image_path), *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_missing_query_is_a_usage_error(image_path):
    result = locate(str(image_path))
    assert result.exit_code == 2
    assert "--query" in result.output


def test_models_lists_every_backend_with_its_checkpoint():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "240"})
    assert result.exit_code == 0
    for name in ("grounding-dino-base", "IDEA-Research/grounding-dino-tiny", "owlv2-base",
                 "florence-2-large", "clip-rerank"):  # fmt: skip
        assert name in result.stdout


def broken_load(*args, **kwargs):
    raise RuntimeError("the weights are\ncorrupt")


def test_internal_error_is_one_line_and_exit_1(image_path, monkeypatch):
    import sceneloc

    monkeypatch.setattr(sceneloc, "load", broken_load)
    result = locate(str(image_path), "-q", "anything")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: locate failed: RuntimeError: the weights are corrupt "
        "(sceneloc --verbose shows the traceback)"
    ]
    assert result.stdout == ""


def test_verbose_shows_the_traceback_of_an_internal_error(image_path, monkeypatch):
    import sceneloc

    monkeypatch.setattr(sceneloc, "load", broken_load)
    result = runner.invoke(app, ["--verbose", "locate", str(image_path), "-q", "anything"])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "in broken_load" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: locate failed: RuntimeError")


def test_verbose_keeps_a_user_error_to_one_line(image_path):
    result = runner.invoke(app, ["--verbose", "locate", str(image_path), "-q", " "])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == "error: query 1 is empty or blank"


def test_python_m_sceneloc_reports_an_internal_error_the_same_way(image_path):
    """``python -m sceneloc`` (and ``accelerate launch -m sceneloc``) runs the same app."""
    program = (
        "import runpy, sys, sceneloc\n"
        "def broken_load(*args, **kwargs): raise RuntimeError('boom')\n"
        "sceneloc.load = broken_load\n"
        f"sys.argv = ['sceneloc', 'locate', {str(image_path)!r}, '-q', 'x']\n"
        "runpy.run_module('sceneloc', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: locate failed: RuntimeError: boom (sceneloc --verbose shows the traceback)"
    ]


def test_without_model_the_default_for_the_device_is_loaded(image_path):
    result = locate(str(image_path), "-q", "x", "--device", "cpu")
    # Offline, the default's hub checkpoint cannot be fetched: the one-line error names it.
    assert result.exit_code == 2
    checkpoint = resolve(default_model("locate", "cpu")).checkpoint
    assert checkpoint in result.stderr and len(result.stderr.strip().splitlines()) == 1
