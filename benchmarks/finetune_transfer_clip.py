"""It transfers, for the CLIP re-ranker: its head fine-tuned on a domain CLIP never saw, against
plain CLIP similarity, Acc@0.5 on that domain's held-out scenes.

There is no pretrained CLIP offline, so the script makes one: a small CLIP (random weights,
transformers' ``CLIPModel``) trained contrastively on the object crops of synthetic domain A
(red, green, blue, yellow circles, squares and triangles on the textured ground) and their
descriptions ("the large red circle", "the square", ...). Domain B is what it never saw:
orange, cyan, purple and pink stars, hexagons, diamonds and crosses on a dark ground (its
words are in the tokenizer's vocabulary, their embeddings never trained). Then
``sceneloc.finetune`` trains the re-ranker's head on domain B's training scenes for a bounded
time (its best epoch chosen on B's val scenes), and both are scored by ``sceneloc evaluate``'s
code on B's held-out test scenes.

Proposals: no detector is trained here, so the proposer is replaced by an oracle that gives
every object's true box in the image (from ``scenes.jsonl``): the figures measure how well
each scorer picks the referent among all the scene's objects, not detection. Queries are the
generator's attribute queries ("the cyan hexagon", "the big star": one referent, with a
same-shape distractor), the kind a re-ranker of crops can answer; flips are off (the oracle
knows the images as they are on disk).

    OMP_NUM_THREADS=1 python benchmarks/finetune_transfer_clip.py --out /work/runs/clip-transfer

Prints plain CLIP's Acc@0.5 on domain A (it learned that domain) and on B, the head's on B,
then calibrates the fine-tuned model's "not there" (``fit_calibration``, the code of
``sceneloc calibrate``, called here because the oracle lives in this process) on B's val
scenes and prints absent queries refused and present ones kept on B's test scenes before and
after, and writes OUT/transfer.json; OUT/run is the ``sceneloc finetune`` run (report.md).
``--random-clip`` is the control: the same with a CLIP never trained at all, to show how much
of the head's figure its CLIP features' pretraining is worth.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import sceneloc
from checkpoints.clip import BOS, EOS, build_rt_detr, clip_vocabulary
from sceneloc.backends.clip_rerank import ClipRerankBackend, square_crop
from sceneloc.calibration import fit_calibration, query_scores, rates
from sceneloc.data import read_samples, write_samples
from sceneloc.data.synth.vocab import COLORS, PLURALS, SHAPES, SIZE_WORDS
from sceneloc.evaluation import evaluate_model

DOMAIN_A = {"colors": "red,green,blue,yellow", "shapes": "circle,square,triangle",
            "background": "texture"}  # fmt: skip
DOMAIN_B = {"colors": "orange,cyan,purple,pink", "shapes": "star,hexagon,diamond,cross",
            "background": "dark"}  # fmt: skip
#: Small scenes with large-enough objects, attribute queries only.
SCENES = {"size": 192, "object-size-base": 320, "min-objects": 8, "max-objects": 16,
          "query-types": "attribute"}  # fmt: skip
CROP = 32
#: Whole words of the tokenizer ("medium-sized" is pre-tokenized as "medium", "-", "sized").
WORDS = ("the", "a", "shape", "-", *COLORS, *SHAPES, *PLURALS.values(),
         *(p for words in SIZE_WORDS.values() for w in words for p in w.split("-")))  # fmt: skip
TEXT_LENGTH = 32

logger = logging.getLogger("finetune_transfer_clip")


def synth(out: Path, domain: dict[str, str], seed: int, images: int, splits: str) -> Path:
    """``sceneloc data synth`` into ``out`` (kept if there already)."""
    if not (out / "annotations.jsonl").exists():
        options = [f"--{k}={v}" for k, v in {**SCENES, **domain}.items()]
        command = [sys.executable, "-m", "sceneloc", "data", "synth", "--out", str(out),
                   "--num-images", str(images), "--seed", str(seed), "--splits", splits,
                   *options, "--overwrite"]  # fmt: skip
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out


def split_file(root: Path, split: str) -> Path:
    path = root / f"{split}.jsonl"
    write_samples(path, (s for s in read_samples(root / "annotations.jsonl") if s.split == split))
    return path


def tokenizer() -> CLIPTokenizer:
    """A byte-level BPE with a whole token for each word of the synthetic vocabulary."""
    vocab, merges = clip_vocabulary(WORDS)
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=EOS, model_max_length=TEXT_LENGTH)


def small_clip(vocab_size: int, bos: int, eos: int) -> CLIPModel:
    text = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=TEXT_LENGTH, bos_token_id=bos,
                eos_token_id=eos, pad_token_id=eos)  # fmt: skip
    vision = dict(image_size=CROP, patch_size=4, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4)  # fmt: skip
    torch.manual_seed(0)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=64))


def scenes(root: Path, split: str | None = None) -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in (root / "scenes.jsonl").read_text().splitlines())
    return [s for s in lines if split is None or s["split"] == split]


def digest(image: Image.Image) -> str:
    return hashlib.sha1(image.convert("RGB").tobytes()).hexdigest()


def install_oracle(roots: list[Path]) -> None:
    """Every image's proposals become its objects' true boxes (``scenes.jsonl``)."""
    boxes: dict[str, torch.Tensor] = {}
    for root in roots:
        for scene in scenes(root):
            image = Image.open(root / scene["image"])
            found = [obj["box"] for obj in scene["objects"]]
            boxes[digest(image)] = torch.tensor(found, dtype=torch.float32).reshape(-1, 4)

    def propose(self: ClipRerankBackend, image: Image.Image) -> torch.Tensor:
        return boxes[digest(image)]

    ClipRerankBackend.propose = propose


def caption(obj: dict[str, Any], rng: np.random.Generator) -> tuple[str, tuple]:
    """A description of ``obj`` naming its shape and maybe its size and colour, and what
    it names (``None`` where it says nothing)."""
    size = obj["size"] if rng.random() < 0.4 else None
    color = obj["color"] if rng.random() < 0.7 else None
    words = ["the"]
    if size:
        words.append(str(rng.choice(SIZE_WORDS[size])))
    if color:
        words.append(color)
    words.append(obj["shape"])
    return " ".join(words), (size, color, obj["shape"])


def pretrain_clip(root: Path, out: Path, steps: int, seed: int = 0) -> Path:
    """Train the small CLIP on domain A's object crops, contrastively: a crop matches every
    caption it satisfies (soft targets, since captions repeat within a batch)."""
    tok = tokenizer()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": CROP},
                                            crop_size={"height": CROP, "width": CROP})  # fmt: skip
    processor = CLIPProcessor(image_processor, tok)
    model = small_clip(len(tok), tok.convert_tokens_to_ids(BOS), tok.convert_tokens_to_ids(EOS))
    fill = tuple(round(255 * m) for m in image_processor.image_mean)
    crops, objects = [], []
    for scene in scenes(root, "train"):
        image = Image.open(root / scene["image"]).convert("RGB")
        for obj in scene["objects"]:
            crops.append(square_crop(image, obj["box"], fill))
            objects.append(obj)
    pixels = image_processor(images=crops, return_tensors="pt")["pixel_values"]
    print(f"CLIP pretraining on {len(crops)} crops of domain A, {steps} steps", flush=True)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    started, step, batch = time.perf_counter(), 0, 256
    model.train()
    while step < steps:
        index = rng.choice(len(crops), size=min(batch, len(crops)), replace=False)
        texts, specs = zip(*(caption(objects[i], rng) for i in index))
        tokens = tok(list(texts), padding=True, return_tensors="pt")
        out_ = model(pixel_values=pixels[index], **tokens)
        match = torch.tensor([[all(a is None or a == b for a, b in
                                   zip(spec, (objects[j]["size"], objects[j]["color"],
                                              objects[j]["shape"])))
                               for j in index] for spec in specs], dtype=torch.float32)  # fmt: skip
        logits = out_.logits_per_text  # (texts, images)
        targets = match / match.sum(1, keepdim=True), match.T / match.T.sum(1, keepdim=True)
        loss = (F.cross_entropy(logits, targets[0]) + F.cross_entropy(logits.T, targets[1])) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 100 == 0:
            print(f"  step {step} loss {loss.item():.3f}", flush=True)
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    print(f"CLIP: {step} steps in {time.perf_counter() - started:.0f} s", flush=True)
    return out


def by_size_words(data: Path) -> dict[str, Path]:
    """The queries that name a size ("the big star": the crop alone cannot tell) and the
    others ("the cyan hexagon"), each in a file of its own."""
    words = {w for names in SIZE_WORDS.values() for w in names}
    samples = list(read_samples(data))
    files = {}
    for name, wanted in (("names a size", True), ("colour and shape", False)):
        path = data.with_name(f"{data.stem}-{'size' if wanted else 'colour'}.jsonl")
        write_samples(path, (s for s in samples if bool(words & set(s.query.split())) == wanted))
        files[name] = path
    return files


def untrained_clip(out: Path) -> Path:
    """The small CLIP as initialised, with the same processor (the ``--random-clip`` control)."""
    tok = tokenizer()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": CROP},
                                            crop_size={"height": CROP, "width": CROP})  # fmt: skip
    small_clip(
        len(tok), tok.convert_tokens_to_ids(BOS), tok.convert_tokens_to_ids(EOS)
    ).save_pretrained(out)
    CLIPProcessor(image_processor, tok).save_pretrained(out)
    return out


def acc(data: Path, checkpoint: Path, **options: Any) -> dict[str, Any]:
    grounder = sceneloc.load(str(checkpoint), device="cpu", **options)
    result = evaluate_model(str(data), grounder, threshold=0.0).to_dict()
    return {"acc@0.5": result["acc@0.5"], "miou": result["miou"], "n": result["n"]}


def calibrate(checkpoint: Path, val: Path, test: Path, out: Path) -> dict[str, Any]:
    """Platt-calibrate ``checkpoint`` on ``val``; refused and kept on ``test`` before (the
    family's default threshold) and after (0.5), each query with as many absent ones."""
    grounder = sceneloc.load(str(checkpoint), device="cpu")
    fit_calibration(grounder, val, limit=None, method="platt").save(out)
    calibrated = sceneloc.load(str(checkpoint), device="cpu", calibration=out)
    figures = {
        "before": rates(query_scores(grounder, test, limit=None, seed=11),
                        grounder.backend.default_threshold),
        "after": rates(query_scores(calibrated, test, limit=None, seed=11), 0.5),
    }  # fmt: skip
    for name, row in figures.items():
        print(f"not there, {name} calibration (threshold {row['threshold']:g}), domain B "
              f"held-out: absent refused {row['absent_refused']:.3f}, present kept "
              f"{row['present_kept']:.3f} (right box {row['present_kept_right_box']:.3f}), "
              f"ROC AUC {row['roc_auc']:.3f}", flush=True)  # fmt: skip
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/work/runs/clip-transfer"))
    parser.add_argument("--clip-steps", type=int, default=300, help="CLIP pretraining on A.")
    parser.add_argument("--minutes", type=float, default=5.0, help="The head's fine-tuning on B.")
    parser.add_argument(
        "--random-clip",
        action="store_true",
        help="Control: an untrained CLIP (no domain A at all) under the head.",
    )
    parser.add_argument("--lr", type=float, help="The head's learning rate (the recipe's).")
    parser.add_argument("--a-images", type=int, default=400)
    parser.add_argument("--b-train-images", type=int, default=200)
    parser.add_argument("--b-val-images", type=int, default=20, help="Choose best/.")
    parser.add_argument("--b-test-images", type=int, default=60)
    args = parser.parse_args(argv)
    out: Path = args.out
    if (out / "run").exists():
        print(f"{out / 'run'} already holds a run; choose another --out", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    data_a = synth(out / "data-a", DOMAIN_A, 0, args.a_images, "train=0.9,val=0.1")
    images_b = args.b_train_images + args.b_val_images + args.b_test_images
    data_b = synth(out / "data-b", DOMAIN_B, 1, images_b, f"train={args.b_train_images},"
                   f"val={args.b_val_images},test={args.b_test_images}")  # fmt: skip
    pipeline = out / "pipeline"
    clip = pipeline / "clip"
    if not (clip / "config.json").exists():
        if args.random_clip:
            untrained_clip(clip)
        else:
            pretrain_clip(data_a, clip, args.clip_steps)
        build_rt_detr(pipeline / "detector")  # a placeholder: the oracle proposes
        config = {"model_type": "sceneloc-clip-rerank", "clip": "clip", "detector": "detector",
                  "max_proposals": 100}  # fmt: skip
        (pipeline / "config.json").write_text(json.dumps(config, indent=2))
    install_oracle([data_a, data_b])
    a_val, b_train = split_file(data_a, "val"), split_file(data_b, "train")
    b_val, b_test = split_file(data_b, "val"), split_file(data_b, "test")
    plain_a = acc(a_val, pipeline)
    print(f"plain CLIP similarity, domain A held-out ({plain_a['n']} queries): "
          f"Acc@0.5 {plain_a['acc@0.5']:.3f}", flush=True)  # fmt: skip
    plain_b = acc(b_test, pipeline)
    print(f"plain CLIP similarity, domain B held-out ({plain_b['n']} queries): "
          f"Acc@0.5 {plain_b['acc@0.5']:.3f}", flush=True)  # fmt: skip
    started = time.perf_counter()
    result = sceneloc.finetune(
        str(pipeline), b_train, out / "run", val=b_val, epochs=200, max_minutes=args.minutes,
        augment=False, seed=0, lr=args.lr,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    head_b = acc(b_test, result.best)
    gain = head_b["acc@0.5"] - plain_b["acc@0.5"]
    print(f"head fine-tuned on B for {seconds:.0f} s ({len(result.records) - 1} epochs), "
          f"domain B held-out: Acc@0.5 {head_b['acc@0.5']:.3f} "
          f"(plain {plain_b['acc@0.5']:.3f}, gain {gain:+.3f}); report before "
          f"{result.before['acc@0.5']:.3f}, after {result.after['acc@0.5']:.3f} on B's val",
          flush=True)  # fmt: skip
    parts = {}
    for name, path in by_size_words(b_test).items():
        parts[name] = {"plain": acc(path, pipeline), "head": acc(path, result.best)}
        plain, head = parts[name]["plain"], parts[name]["head"]
        print(f"  {name} ({head['n']} queries): plain {plain['acc@0.5']:.3f}, "
              f"head {head['acc@0.5']:.3f}", flush=True)  # fmt: skip
    not_there = calibrate(result.best, b_val, b_test, out / "calibration.json")
    summary = {"plain_a": plain_a, "plain_b": plain_b, "head_b": head_b, "gain": gain,
               "by_query": parts, "calibration": not_there,
               "finetune_seconds": round(seconds, 1), "minutes": args.minutes,
               "clip_steps": 0 if args.random_clip else args.clip_steps,
               "domain_a": DOMAIN_A, "domain_b": DOMAIN_B,
               "scenes": SCENES, "images": {"a": args.a_images, "b_train": args.b_train_images,
                                            "b_val": args.b_val_images,
                                            "b_test": args.b_test_images}}  # fmt: skip
    (out / "transfer.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
