"""Fine-tuning step time and peak memory per model family, at batch 1.

Full-size architectures with random weights (:mod:`full_size`: the hub is out of reach here,
and random weights cost the time and memory of trained ones), each trained the way
``sceneloc finetune`` trains it: its recipe's defaults, inputs, loss and optimizer, on
640 x 480 images, with and without gradient checkpointing, in fp32 and in bf16 (mixed).
Run from the repository root:

    python benchmarks/finetune_memory.py [--families grounding-dino,florence-2,...]
        [--precisions fp32,bf16] [--steps 3] [--work DIR]

Each configuration runs in a process of its own, so that its peak is its own: the process's
peak resident memory on a CPU (``VmHWM``, reset after the first step, which allocates the
optimizer's state), ``torch.cuda.max_memory_allocated`` on a GPU. Step time is the median
of ``--steps`` optimizer steps after that first one, in wall-clock seconds and in the
process's CPU seconds (all its threads: the figure that holds on a machine shared with
other jobs). A family whose recipe is not on this
branch, or whose model does not fit, is printed as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

import full_size

#: GPU memory a family must fit in to be measured on a GPU (a 24 GB card).
GPU_BUDGET_GB = 24


@dataclass(frozen=True)
class Family:
    """One entry of the table: how its full-size checkpoint is built, and the options it
    is fine-tuned with beyond its recipe's defaults."""

    build: Callable[[Path], Path]
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    #: Parameters in billions, to skip a model that cannot fit before building it.
    billions: float = 0.0


FAMILIES: dict[str, Family] = {
    "grounding-dino": Family(full_size.grounding_dino, "Grounding DINO Swin-T (BERT-base)",
                             billions=0.17),
    "florence-2": Family(full_size.florence2, "Florence-2-base (DaViT, BART 6+6)",
                         billions=0.23),
    "qwen3-vl": Family(full_size.qwen3_vl_2b, "Qwen3-VL-2B, LoRA rank 16", {"lora_rank": 16},
                       billions=2.1),
    "clip-rerank": Family(full_size.clip_rerank, "CLIP ViT-B/32 head on RT-DETR R50 crops",
                          billions=0.19),
}  # fmt: skip


def write_samples(folder: Path, count: int) -> Path:
    """``count`` 640 x 480 scenes, each with a query about one large object."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        image = Image.new("RGB", (640, 480), (200, 190, 170))
        draw = ImageDraw.Draw(image)
        box = [60 + 20 * index, 80, 360 + 20 * index, 400]
        draw.rectangle(box, fill=(200, 30, 30))
        draw.ellipse([420, 60, 600, 240], fill=(30, 160, 40))
        image.save(folder / f"{index}.png")
        rows.append({"id": str(index), "image": f"{index}.png", "query": "the red square",
                     "box": box, "split": "train"})  # fmt: skip
    path = folder / "samples.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def measure(model: str, data: str, precision: str, checkpointing: bool, steps: int,
            options: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Train ``steps`` + 1 steps at batch 1 in this process; the step time and peak memory
    of all but the first."""
    import torch
    from accelerate import Accelerator

    from sceneloc.training.finetune import FinetuneOptions, FinetuneTask
    from sceneloc.training.loop import mixed_precision

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as out:
        built = FinetuneOptions.build(
            model=model, data=data, out=out, batch_size=1, precision=precision,
            gradient_checkpointing=checkpointing, augment=False, **options,
        )  # fmt: skip
        task = FinetuneTask(built)
        task.prepare()
        network = task.build_model(None)
        accelerator = Accelerator(
            cpu=not cuda, mixed_precision=mixed_precision(precision, not cuda)
        )
        loader = torch.utils.data.DataLoader(task.dataset(), batch_size=1,
                                             collate_fn=task.collator())  # fmt: skip
        optimizer = torch.optim.AdamW(
            [{"params": params, "lr": built.lr * scale}
             for params, scale in task.parameter_groups(network) if params],
            weight_decay=built.weight_decay,
        )  # fmt: skip
        network, optimizer, loader = accelerator.prepare(network, optimizer, loader)
        network.train()
        seconds, cpu_seconds = [], []
        batches = itertools.islice(itertools.cycle(loader), steps + 1)
        for index, batch in enumerate(batches):
            if index == 1:  # the optimizer's state now exists: the peak from here on
                reset_peak(cuda)
            start, cpu_start = time.perf_counter(), time.process_time()
            loss = task.loss(network, batch)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            if cuda:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(time.process_time() - cpu_start)
        trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
        return {"seconds": statistics.median(seconds[1:]), "peak_gb": peak_gb(cuda),
                "cpu_seconds": statistics.median(cpu_seconds[1:]),
                "threads": torch.get_num_threads(),
                "device": torch.cuda.get_device_name() if cuda else "cpu",
                "trainable_millions": trainable / 1e6, "loss": float(loss)}  # fmt: skip


def reset_peak(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    else:  # peak resident memory back to the current (Linux)
        Path("/proc/self/clear_refs").write_text("5")


def peak_gb(cuda: bool) -> float:
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")


def skipped_family(name: str, family: Family) -> str | None:
    """Why ``name`` cannot be measured here, before its checkpoint is built, or ``None``."""
    import torch

    from sceneloc.training.finetune.recipe import RECIPES

    if name not in RECIPES:
        return "no fine-tuning recipe for it on this branch"
    if torch.cuda.is_available():
        # fp32 weights, plus what LoRA or full training keeps beside them
        need = family.billions * 4 * (1.2 if family.options.get("lora_rank") else 4)
        if need > GPU_BUDGET_GB:
            return f"needs about {need:.0f} GB, more than a {GPU_BUDGET_GB} GB GPU"
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        need = family.billions * 4 * (1.5 if family.options.get("lora_rank") else 4.5)
        if need > 0.8 * total:
            return f"needs about {need:.0f} GB of memory, this machine has {total:.0f} GB"
    return None


def run_child(args: list[str]) -> dict[str, Any]:
    """One configuration in a process of its own; its result, or why it failed."""
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True)  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:160]}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--checkpointing", default="no,yes", help="Without and/or with.")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--work", type=Path, help="Keep the checkpoints here (default: temp).")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, data, precision, checkpointing, steps, options = args.child
        result = measure(model, data, precision, checkpointing == "1", int(steps),
                         json.loads(options))  # fmt: skip
        print(json.dumps(result))
        return

    console = Console(width=160)
    work = args.work or Path(tempfile.mkdtemp(prefix="finetune-memory-"))
    data = write_samples(work / "data", args.steps + 1)
    table = Table(title=f"Fine-tuning at batch 1, median of {args.steps} steps")
    columns = ("family", "precision", "checkpointing", "s / step", "CPU s / step", "peak GB",
               "trains (M)")  # fmt: skip
    for column in columns:
        table.add_column(column)
    for name in args.families.split(","):
        family = FAMILIES[name]
        reason = skipped_family(name, family)
        if reason is not None:
            console.print(f"{name}: skipped: {reason}")
            table.add_row(family.description, "-", "-", "skipped", "", reason, "")
            continue
        checkpoint = work / name
        if not (checkpoint / "config.json").is_file():
            console.print(f"{name}: building the full-size checkpoint in {checkpoint}")
            family.build(checkpoint)
        choices = [int(choice == "yes") for choice in args.checkpointing.split(",")]
        for precision, checkpointing in itertools.product(args.precisions.split(","), choices):
            child = [str(checkpoint), str(data), precision, str(checkpointing), str(args.steps),
                     json.dumps(family.options)]  # fmt: skip
            result = run_child(child)
            console.print(f"{name} {precision} checkpointing={checkpointing}: {result}")
            if "error" in result:
                table.add_row(family.description, precision, "yes" if checkpointing else "no",
                              "failed", "", result["error"], "")  # fmt: skip
                continue
            table.add_row(family.description, precision, "yes" if checkpointing else "no",
                          f"{result['seconds']:.2f}", f"{result['cpu_seconds']:.2f}",
                          f"{result['peak_gb']:.2f}",
                          f"{result['trainable_millions']:.1f}")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
