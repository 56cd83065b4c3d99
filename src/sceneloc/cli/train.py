"""``sceneloc train``: train a native model (``--task locate|describe``) from flags, a preset
or a YAML config."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sceneloc.cli.common import console, err_console, fail
from sceneloc.errors import SceneLocError

if TYPE_CHECKING:
    from sceneloc.training import ProgressCallback, TrainingProgress


@contextmanager
def progress_bar() -> Iterator[ProgressCallback]:
    """A progress bar on stderr (when it is a terminal); yields the training's callback."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=err_console, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("training", total=None)

        def advance(progress: TrainingProgress) -> None:
            bar.update(task, completed=progress.step, total=progress.total_steps,
                       description=progress.description)  # fmt: skip

        yield advance


def read_config(path: Path) -> dict[str, Any]:
    """The options of a YAML config file (the keys of the task's options class)."""
    import yaml

    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise fail(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise fail(f"{path}: a training config must be a mapping of option: value")
    return {str(key).replace("-", "_"): value for key, value in values.items()}


def train(
    task: Annotated[
        str | None,
        typer.Option(
            help="What to train: locate (the grounder, default), describe (the region "
            "describer) or align (the region-phrase aligner)."
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Training samples (JSON Lines, sceneloc's format).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for last/, best/, metrics.csv and logs.")
    ] = None,
    val: Annotated[
        Path | None, typer.Option(help="Validation samples, scored after every epoch.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file of options; flags given here override it.")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="locate: synthetic-cpu, resnet50-bert or concat-glove; describe: "
            "synthetic-cpu or resnet50."
        ),
    ] = None,
    image_encoder: Annotated[
        str | None, typer.Option(help="builtin-cnn, or a transformers backbone (hub id or dir).")
    ] = None,
    text_encoder: Annotated[
        str | None,
        typer.Option(help="builtin, word-vectors, or a transformers encoder (hub id or dir)."),
    ] = None,
    fusion: Annotated[str | None, typer.Option(help="cross-attention or concat.")] = None,
    word_vectors: Annotated[
        Path | None, typer.Option(help="GloVe-format vectors for --text-encoder word-vectors.")
    ] = None,
    image_size: Annotated[int | None, typer.Option(min=32, help="Square input side.")] = None,
    hidden_size: Annotated[int | None, typer.Option(min=8, help="Fusion width.")] = None,
    fusion_layers: Annotated[int | None, typer.Option(min=1)] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    max_minutes: Annotated[
        float | None, typer.Option(min=0.01, help="Stop (and save) after this long.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per batch.")] = None,
    grad_accum: Annotated[
        int | None,
        typer.Option(min=1, help="Batches whose gradients are summed per optimizer step."),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="auto (bf16 on GPUs that have it, else fp32), fp32, bf16 or fp16 (GPU)."),
    ] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Peak learning rate.")] = None,
    lr_schedule: Annotated[
        str | None,
        typer.Option(help="After the warm-up: cosine, or stable-decay (held, then decayed)."),
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    absent_fraction: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Extra queries whose referent is absent, per query."),
    ] = None,
    learn_attributes: Annotated[
        bool | None,
        typer.Option(
            "--learn-attributes/--no-learn-attributes",
            help="When the data has a scenes.jsonl (synthetic scenes), also teach the image "
            "features every object's colour, shape, size and place, and relative queries "
            "their anchor (default: on).",
        ),
    ] = None,
    num_workers: Annotated[int | None, typer.Option(min=0, help="Data-loading workers.")] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(help="Start from this trained native model's weights (a fine-tune)."),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run saved in --out.")] = False,
) -> None:
    """Train a native model: the grounder, the region describer (--task describe) or the
    region-phrase aligner (--task align); many devices: `accelerate launch -m sceneloc train`."""
    from accelerate import PartialState

    from sceneloc.training import task_options
    from sceneloc.training import train as run_training

    given = read_config(config) if config else {}
    task = task or given.pop("task", None) or "locate"
    flags = {
        "data": data, "out": out, "val": val, "image_encoder": image_encoder,
        "text_encoder": text_encoder, "fusion": fusion, "word_vectors": word_vectors,
        "image_size": image_size, "hidden_size": hidden_size, "fusion_layers": fusion_layers,
        "epochs": epochs, "max_minutes": max_minutes, "batch_size": batch_size,
        "grad_accum": grad_accum, "precision": precision, "lr": lr,
        "lr_schedule": lr_schedule,
        "seed": seed, "absent_fraction": absent_fraction, "num_workers": num_workers,
        "learn_attributes": learn_attributes, "init_from": init_from,
        "resume": resume or None,
    }  # fmt: skip
    given.update(
        {k: str(v) if isinstance(v, Path) else v for k, v in flags.items() if v is not None}
    )
    try:
        options = task_options(task).build(
            given.pop("preset", None) if preset is None else preset, **given
        )
        with progress_bar() as progress:
            records = run_training(options, progress)
    except SceneLocError as exc:
        raise fail(str(exc)) from None
    if records and PartialState().is_main_process:
        last = records[-1]
        metric, score = next(iter(last.validation.items()), (None, None))
        scored = f", validation {metric} {score:.3f}" if score is not None else ""
        console.print(
            f"trained {last.epoch} epoch(s), {last.step} steps in {last.seconds:.0f} s{scored}; "
            f"models in {options.out}/last and {options.out}/best",
            highlight=False,
        )
