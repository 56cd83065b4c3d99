"""``sceneloc finetune``: fine-tune a pretrained grounder on your own samples, from flags or a
YAML config; many devices: ``accelerate launch -m sceneloc finetune ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sceneloc.cli.common import console
from sceneloc.cli.train import progress_bar, read_config


def finetune(
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="What to start from: short name, hub id or directory."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Training samples (JSON Lines, sceneloc's format).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for best/, last/, report.json/.md, metrics.csv and logs."),
    ] = None,
    val: Annotated[
        Path | None,
        typer.Option(help="Validation samples, scored before the first step and after each epoch."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file of options; flags given here override it.")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="locate (default), or describe (Florence-2: region captions)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    max_minutes: Annotated[
        float | None, typer.Option(min=0.01, help="Stop (and save) after this long.")
    ] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Peak learning rate.")] = None,
    backbone_lr: Annotated[
        float | None,
        typer.Option(min=0.0, help="Learning rate of the vision and text towers (default lr/10)."),
    ] = None,
    freeze: Annotated[
        str | None, typer.Option(help="vision, text or none: the tower that keeps its weights.")
    ] = None,
    lora_rank: Annotated[
        int | None,
        typer.Option(min=0, help="LoRA rank (0: off); merged into the saved weights."),
    ] = None,
    lora_alpha: Annotated[
        float | None, typer.Option(min=0.0, help="LoRA scale numerator (default: the rank).")
    ] = None,
    lora_dropout: Annotated[float | None, typer.Option(min=0.0, max=1.0)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Samples per batch.")] = None,
    grad_accum: Annotated[
        int | None, typer.Option(min=1, help="Batches summed per optimizer step.")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="auto (bf16 on GPUs that have it, else fp32), fp32, bf16 or fp16 (GPU)."),
    ] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--gradient-checkpointing/--no-gradient-checkpointing",
            help="Recompute activations in the backward pass: less memory, slower steps.",
        ),
    ] = None,
    lr_schedule: Annotated[
        str | None,
        typer.Option(help="After the warm-up: cosine, or stable-decay (held, then decayed)."),
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option(
            "--augment/--no-augment",
            help="Flip images left-right whose query says nothing of left and right (default on).",
        ),
    ] = None,
    val_limit: Annotated[
        int | None, typer.Option(min=1, help="Validate on at most this many samples.")
    ] = None,
    absent_fraction: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Extra queries whose referent is absent, per query."),
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    num_workers: Annotated[int | None, typer.Option(min=0, help="Data-loading workers.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run saved in --out.")] = False,
) -> None:
    """Fine-tune Grounding DINO, Florence-2, a vision-language model or the CLIP re-ranker on
    your samples; report.md compares the validation figures before and after."""
    from accelerate import PartialState

    from sceneloc.training import train as run_training
    from sceneloc.training.finetune import FinetuneOptions

    given = read_config(config) if config else {}
    flags = {
        "model": model, "data": data, "out": out, "val": val, "task": task, "epochs": epochs,
        "max_minutes": max_minutes, "lr": lr, "backbone_lr": backbone_lr, "freeze": freeze,
        "lora_rank": lora_rank, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
        "batch_size": batch_size, "grad_accum": grad_accum, "precision": precision,
        "gradient_checkpointing": gradient_checkpointing, "lr_schedule": lr_schedule,
        "augment": augment, "val_limit": val_limit, "absent_fraction": absent_fraction,
        "seed": seed, "num_workers": num_workers, "resume": resume or None,
    }  # fmt: skip
    given.update(
        {k: str(v) if isinstance(v, Path) else v for k, v in flags.items() if v is not None}
    )
    options = FinetuneOptions.build(None, **given)
    with progress_bar() as progress:
        records = run_training(options, progress)
    if not PartialState().is_main_process:
        return
    report_path = Path(options.out) / "report.md"
    if report_path.is_file():
        console.print(report_path.read_text(encoding="utf-8"), highlight=False, markup=False)
    last = records[-1] if records else None
    if last is not None:
        console.print(
            f"fine-tuned {last.epoch} epoch(s), {last.step} steps in {last.seconds:.0f} s; "
            f"models in {options.out}/best and {options.out}/last",
            highlight=False,
        )
