"""``sceneloc batch``: one line per image and query, error lines, resume after a crash, crops,
bad input, and two processes sharing the work under ``accelerate launch``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sceneloc
from conftest import draw_scene
from sceneloc.batch import expand_images, read_queries, run_batch
from sceneloc.cli import app
from test_images import png_bytes

runner = CliRunner()

QUERIES = ["the red square", "a green circle"]


@pytest.fixture(scope="module")
def grounder() -> sceneloc.Grounder:
    return sceneloc.load("native-synth", device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Five small scenes of different sizes, one text file named .png, one truncated PNG."""
    path = tmp_path_factory.mktemp("images")
    for index in range(5):
        draw_scene(128 + 16 * index, 96 + 8 * index).save(path / f"scene{index}.png")
    (path / "text.png").write_text("not an image at all")
    data = png_bytes(draw_scene(320, 192))
    (path / "truncated.png").write_bytes(data[: len(data) // 2])
    (path / "notes.txt").write_text("not listed: a directory gives its image files only")
    return path


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def answers(out: Path) -> dict[tuple[str, str], dict]:
    """Result lines by (image, query); fails on a duplicate."""
    found: dict[tuple[str, str], dict] = {}
    for record in lines(out):
        if "query" in record:
            key = (record["image"], record["query"])
            assert key not in found, f"duplicate line for {key}"
            found[key] = record
    return found


@pytest.fixture(scope="module")
def reference(grounder, folder, tmp_path_factory) -> Path:
    """An uninterrupted run over the folder, to compare the others with."""
    out = tmp_path_factory.mktemp("reference") / "results.jsonl"
    summary = run_batch(grounder, expand_images(folder), QUERIES, out, threshold=0.0)
    assert (summary.written, summary.skipped, summary.errors) == (10, 0, 2)
    return out


def test_one_line_per_image_and_query_and_one_per_unreadable_image(folder, reference):
    records = lines(reference)
    assert len(records) == 5 * 2 + 2
    scenes = [str(folder / f"scene{i}.png") for i in range(5)]
    assert set(answers(reference)) == {(image, q) for image in scenes for q in QUERIES}
    for record in records:
        if "error" in record:
            assert set(record) == {"image", "error"} and "\n" not in record["error"]
            continue
        assert list(record) == ["image", "query", "box", "score", "candidates", "targets"]
        assert len(record["box"]) == 4
        assert record["candidates"][0] == {"box": record["box"], "score": record["score"],
                                           "label": record["query"]}  # fmt: skip
    errors = {Path(r["image"]).name: r["error"] for r in records if "error" in r}
    assert "not an image" in errors["text.png"] and "cannot decode" in errors["truncated.png"]


def test_resume_after_a_crash_writes_no_duplicates_and_the_same_answers(
    grounder, folder, reference, tmp_path
):
    out = tmp_path / "results.jsonl"
    text = reference.read_bytes()
    complete = text.split(b"\n")[:4]
    half = text.split(b"\n")[4][:40]  # what a crash in the middle of a write would leave
    out.write_bytes(b"\n".join(complete) + b"\n" + half)
    summary = run_batch(grounder, expand_images(folder), QUERIES, out, threshold=0.0)
    already = sum(1 for line in complete if b'"query"' in line)
    assert (summary.written, summary.skipped) == (10 - already, already)
    assert answers(out) == answers(reference)
    assert sorted(map(json.dumps, lines(out))) == sorted(map(json.dumps, lines(reference)))


def test_running_again_writes_nothing(grounder, folder, reference, tmp_path):
    out = tmp_path / "results.jsonl"
    out.write_bytes(reference.read_bytes())
    summary = run_batch(grounder, expand_images(folder), QUERIES, out, threshold=0.0)
    assert (summary.written, summary.skipped, summary.errors) == (0, 10, 0)
    assert out.read_bytes() == reference.read_bytes()


def test_a_query_added_later_is_the_only_one_asked(grounder, folder, reference, tmp_path):
    out = tmp_path / "results.jsonl"
    out.write_bytes(reference.read_bytes())
    summary = run_batch(grounder, expand_images(folder), [*QUERIES, "a blue triangle"], out)
    assert (summary.written, summary.skipped) == (5, 10)
    assert len(answers(out)) == 15


def test_images_from_a_directory_or_a_glob_and_queries_from_a_file(folder, tmp_path):
    assert [p.name for p in expand_images(folder)] == [
        *(f"scene{i}.png" for i in range(5)), "text.png", "truncated.png",
    ]  # fmt: skip
    assert [p.name for p in expand_images(folder / "scene[13].png")] == [
        "scene1.png", "scene3.png",
    ]  # fmt: skip
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for name in ("top.JPG", "sub/a.png", "sub/deeper/b.png"):
        draw_scene().save(tmp_path / name, format="PNG" if name.endswith("png") else "JPEG")
    assert [p.name for p in expand_images(tmp_path)] == ["top.JPG"]  # not into subfolders
    assert [p.name for p in expand_images(f"{tmp_path}/**/*.png")] == ["a.png", "b.png"]
    file = tmp_path / "queries.txt"
    file.write_text("# what to look for\nthe red square\n\n  a green   circle  \n")
    assert read_queries(file) == ["the red square", "a green   circle"]


def batch(*args) -> object:
    return runner.invoke(app, ["batch", "--model", "native-synth", "--device", "cpu",
                               *map(str, args)])  # fmt: skip


def test_cli_with_queries_file_and_crops(folder, reference, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text("# two things\nthe red square\n\na green circle\n")
    out, crops = tmp_path / "deep" / "results.jsonl", tmp_path / "crops"
    result = batch("--images", folder / "scene*.png", "--queries", queries, "--out", out,
                   "--crops", crops, "--threshold", "0", "--workers", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 10 answers, skipped 0" in result.stdout
    assert answers(out) == answers(reference)
    assert sorted(p.name for p in crops.iterdir()) == sorted(
        f"scene{i}.{slug}.png" for i in range(5) for slug in ("the-red-square", "a-green-circle")
    )
    again = batch("--images", folder / "scene*.png", "--queries", queries, "--out", out)
    assert again.exit_code == 0 and "wrote 0 answers, skipped 10" in again.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images", "{folder}/*.jpg", "-q", "x"], "no file matches"),
        (["--images", "{tmp}", "-q", "x"], "no image files"),
        (["--images", "{folder}", "--queries", "{tmp}/none.txt"], "queries file not found"),
        (["--images", "{folder}", "--queries", "{tmp}/comments.txt"], "holds no query"),
        (["--images", "{folder}", "-q", "x", "--queries", "{tmp}/comments.txt"], "one of them"),
        (["--images", "{folder}"], "one of them"),
        (["--images", "{folder}", "-q", " "], "empty or blank"),
        (["--images", "{folder}", "-q", "x", "--model", "native-synht"], "did you mean"),
        (["--images", "{folder}", "-q", "x", "--out", "{tmp}"], "cannot write to"),
        (["--images", "{folder}", "-q", "x", "--out", "{tmp}/comments.txt"], "not a line of"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, folder, tmp_path):
    (tmp_path / "comments.txt").write_text("# nothing but a comment\n\n")
    given = [a.format(folder=folder, tmp=tmp_path) for a in args]
    if "--out" not in given:
        given += ["--out", str(tmp_path / "results.jsonl")]
    result = runner.invoke(app, ["batch", "--model", "native-synth", *given])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert (tmp_path / "comments.txt").read_text() == "# nothing but a comment\n\n"


def test_two_processes_share_the_images_and_resume(folder, reference, tmp_path):
    """`accelerate launch` of two processes on CPUs (gloo), resuming a crashed run."""
    out = tmp_path / "results.jsonl"
    text = reference.read_bytes()
    out.write_bytes(b"\n".join(text.split(b"\n")[:3]) + b"\n" + text.split(b"\n")[3][:25])
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", "0", "-m", "sceneloc", "batch", "--model", "native-synth",
        "--images", str(folder), "-q", QUERIES[0], "-q", QUERIES[1], "--out", str(out),
        "--threshold", "0",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "process 1 of 2: wrote" in done.stdout and "process 2 of 2: wrote" in done.stdout
    # The launched processes may use other thread counts: equal up to float rounding.
    found, expected = answers(out), answers(reference)
    assert found.keys() == expected.keys()
    for key, record in found.items():
        assert record["box"] == pytest.approx(expected[key]["box"], abs=0.05)
        assert record["score"] == pytest.approx(expected[key]["score"], abs=1e-3)
    errors = sorted(r["image"] for r in lines(out) if "error" in r)
    assert errors == [str(folder / "text.png"), str(folder / "truncated.png")]
