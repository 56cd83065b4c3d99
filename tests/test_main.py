"""The seeds' ``main.py`` command line maps onto ``sceneloc`` and keeps working."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

from checkpoints.native import build_native
from conftest import draw_scene

ROOT = Path(__file__).resolve().parents[1]


def run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *map(str, args)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip


def test_infer_mode_locates_with_a_checkpoint_directory(tmp_path):
    model = build_native(tmp_path / "model", ["the red square"])
    image = tmp_path / "scene.png"
    draw_scene().save(image)
    done = run_main("--mode", "infer", "--image", image, "--query", "the red square",
                    "--ckpt", model)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "the red square" in done.stdout


def test_infer_mode_bad_input_is_one_line(tmp_path):
    done = run_main("--mode", "infer", "--image", tmp_path / "missing.png", "--query", "x",
                    "--ckpt", tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_train_mode_reads_the_refer_layout_and_trains(tmp_path):
    """--dataset_dir holding refcoco/refs(unc).p, refcoco/instances.json and train2014/."""
    root = tmp_path / "data"
    (root / "refcoco").mkdir(parents=True)
    (root / "train2014").mkdir()
    images, annotations, refs = [], [], []
    for index in range(1, 4):
        name = f"COCO_train2014_{index:012d}.jpg"
        draw_scene().save(root / "train2014" / name)
        images.append({"id": index, "file_name": name, "width": 160, "height": 96})
        annotations.append({"id": 10 + index, "image_id": index, "category_id": 1,
                            "bbox": [10, 10, 40, 50], "iscrowd": 0})  # fmt: skip
        refs.append({"ref_id": index, "ann_id": 10 + index, "image_id": index, "split": "train",
                     "category_id": 1,
                     "sentences": [{"sent": "the red square", "sent_id": index}]})  # fmt: skip
    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs))
    categories = [{"id": 1, "name": "square"}]
    (root / "refcoco" / "instances.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    out = tmp_path / "run"
    done = run_main("--mode", "train", "--dataset_dir", root, "--split", "train", "--year", "2014",
                    "--preset", "synthetic-cpu", "--epochs", "1", "--out", out)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    samples = (out / "refcoco-train.jsonl").read_text().splitlines()
    assert len(samples) == 3
    assert json.loads(samples[0])["box"] == [10, 10, 50, 60]
    assert (out / "last" / "model.safetensors").is_file()
