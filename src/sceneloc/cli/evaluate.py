"""``sceneloc evaluate``: score a model, a predictions file or a chance baseline on a dataset.

``--task locate`` (the default) scores boxes found for queries; ``--task describe`` scores
captions of the data's reference regions (:mod:`sceneloc.evaluation.describing`).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sceneloc.cli.common import (
    CalibrationFile,
    Device,
    Dtype,
    Events,
    TileOverlap,
    Tiles,
    calibration_options,
    console,
    err_console,
    fail,
    locate_options,
)


def evaluate(
    data: Annotated[Path, typer.Option("--data", help="Samples in sceneloc's JSON Lines format.")],
    task: Annotated[
        str,
        typer.Option(
            help="locate: boxes for the queries; describe: captions of the reference regions "
            "(lines with the same image and box), scored against their queries."
        ),
    ] = "locate",
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model to run: short name, hub id or path.")
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help='Predictions to score: JSON Lines {"id", "box", "candidates"?} '
            '(describe: {"image", "box", "caption"}).'
        ),
    ] = None,
    listener: Annotated[
        str | None,
        typer.Option(
            help="Describe: a locate model that finds each caption again (roundtrip@0.5)."
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Evaluate only the samples of this split.")
    ] = None,
    meteor: Annotated[
        bool, typer.Option(help="Describe: METEOR too, when Java is installed (slow to start).")
    ] = True,
    baseline: Annotated[
        str | None, typer.Option(help="Chance baseline to score: random-object or same-shape.")
    ] = None,
    scenes: Annotated[
        Path | None,
        typer.Option(
            help="Synthetic scenes.jsonl for --baseline and describe's exact "
            "(default: beside --data)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of --baseline.")] = 0,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Evaluate only the first N samples (describe: regions)."),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", min=1, help="Most queries (describe: boxes) per image per model call."
        ),
    ] = 16,
    threshold: Annotated[
        float,
        typer.Option(
            help="Minimum score for --model. 0 always scores the top box, as RefCOCO accuracy "
            "does; a model's own threshold also scores its 'not found' answers."
        ),
    ] = 0.0,
    device: Device = "auto",
    dtype: Dtype = "auto",
    tiles: Tiles = "off",
    tile_overlap: TileOverlap = 0.2,
    events: Events = False,
    calibration: CalibrationFile = None,
    save_predictions: Annotated[
        Path | None,
        typer.Option("--save-predictions", help="Write the predictions here, to re-score later."),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Folder for metrics.json, report.md and plots (PNG)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON to stdout.")] = False,
) -> None:
    """Score predictions against a dataset: accuracy at IoU 0.5 and 0.75, mean IoU and more;
    with --task describe, BLEU, CIDEr-D, METEOR, exact and roundtrip@0.5 of captions."""
    from sceneloc import evaluation
    from sceneloc.registry import Task, as_task

    if as_task(task) is Task.DESCRIBE:
        if baseline is not None:
            raise fail("--baseline is for --task locate")
        describe_options = {
            "limit": limit,
            "batch_size": batch_size,
            "split": split,
            "meteor": meteor,
            "save_predictions": save_predictions,
            "scenes": scenes,
        }
        evaluate_describe(data, model, predictions, listener, device, dtype, report, as_json,
                          describe_options)  # fmt: skip
        return
    if listener is not None:
        raise fail("--listener is for --task describe")
    sources = [name for name, value in
               (("--model", model), ("--predictions", predictions), ("--baseline", baseline))
               if value is not None]  # fmt: skip
    if len(sources) != 1:
        given = f" (got {' and '.join(sources)})" if sources else ""
        raise fail(f"give exactly one of --model, --predictions or --baseline{given}")
    if not data.is_file():
        raise fail(f"data file not found: {data}")
    how = locate_options(tiles, tile_overlap, events)
    options: dict[str, Any] = {
        "limit": limit,
        "batch_size": batch_size,
        "image_sizes": report is not None,
        "save_predictions": save_predictions,
        "split": split,
    }
    if baseline is not None:
        evaluation.baselines.check_baseline(baseline)
    total = evaluation.scan(data, limit, check_images=model is not None, split=split)
    if model is not None:
        import sceneloc

        grounder = sceneloc.load(
            model, device=device, dtype=dtype, **calibration_options(calibration)
        )
    with progress_bar(total) as advance:
        options["progress"] = advance
        if model is not None:
            result = evaluation.evaluate_model(
                data, grounder, threshold=threshold, locate_options=how, **options
            )
        elif predictions is not None:
            result = evaluation.evaluate_predictions(data, predictions, **options)
        else:
            assert baseline is not None
            result = evaluation.evaluate_baseline(data, baseline, scenes, seed, **options)
    if report is not None:
        evaluation.write_report(result, report)
    metrics = result.to_dict()
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    print_tables(metrics, result.source)
    if report is not None:
        console.print(f"wrote the report to {report}")
    if save_predictions is not None:
        console.print(f"wrote the predictions to {save_predictions}")


def evaluate_describe(
    data: Path,
    model: str | None,
    predictions: Path | None,
    listener: str | None,
    device: str,
    dtype: str,
    report: Path | None,
    as_json: bool,
    options: dict[str, Any],
) -> None:
    """``sceneloc evaluate --task describe``: caption the regions of ``data`` and score them."""
    import sceneloc
    from sceneloc.data import read_samples
    from sceneloc.evaluation import describing, write_describe_report

    if (model is None) == (predictions is None):
        raise fail("give exactly one of --model or --predictions")
    if not data.is_file():
        raise fail(f"data file not found: {data}")
    source: Any = predictions
    if model is not None:
        source = sceneloc.load(model, task="describe", device=device, dtype=dtype)
    grounder = None
    if listener is not None:
        grounder = sceneloc.load(listener, task="locate", device=device, dtype=dtype)
    regions = describing.read_regions(read_samples(data), options["split"],
                                      options["limit"])  # fmt: skip
    with progress_bar(len(regions)) as advance:
        result = describing.evaluate_describer(
            data, source, listener=grounder, progress=advance, **options
        )
    if report is not None:
        write_describe_report(result, report)
    metrics = result.to_dict()
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    overall = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    speed = overall.pop("seconds_per_region")
    console.print(metrics_table(f"evaluation: {result.source}", {"all": overall}, "regions"))
    console.print(metrics_table("by reference type", metrics["by_type"], "type"))
    if speed is not None and model is not None:
        console.print(f"{speed:.4f} s per region")
    if report is not None:
        console.print(f"wrote the report to {report}")
    if options["save_predictions"] is not None:
        console.print(f"wrote the predictions to {options['save_predictions']}")


@contextmanager
def progress_bar(total: int):
    """A progress bar on stderr (when it is a terminal); yields the ``advance(n)`` callback."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(
        *columns, console=err_console, transient=True, disable=not err_console.is_terminal
    ) as progress:
        task = progress.add_task("evaluating", total=total)
        yield lambda done: progress.advance(task, done)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def metrics_table(title: str, groups: dict[str, dict[str, Any]], heading: str) -> Table:
    columns = list(next(iter(groups.values())))
    table = Table(title=title, title_justify="left")
    table.add_column(heading)
    for column in columns:
        table.add_column(column, justify="right")
    for name, metrics in groups.items():
        table.add_row(name, *(_cell(metrics[c]) for c in columns))
    return table


def print_tables(metrics: dict[str, Any], source: str) -> None:
    overall = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    speed = overall.pop("seconds_per_sample")
    console.print(metrics_table(f"evaluation: {source}", {"all": overall}, "samples"))
    for key, heading in (("by_type", "type"), ("by_split", "split")):
        if metrics[key]:
            console.print(metrics_table(f"by {heading}", metrics[key], heading))
    if speed is not None:
        console.print(f"{speed:.4f} s per sample")
