"""``sceneloc evaluate``: score a model, a predictions file or a chance baseline on a dataset."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sceneloc.cli.common import Device, Dtype, console, err_console, fail


def evaluate(
    data: Annotated[Path, typer.Option("--data", help="Samples in sceneloc's JSON Lines format.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model to run: short name, hub id or path.")
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(help='Predictions to score: JSON Lines {"id", "box", "candidates"?}.'),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Chance baseline to score: random-object or same-shape.")
    ] = None,
    scenes: Annotated[
        Path | None,
        typer.Option(help="Synthetic scenes.jsonl for --baseline (default: beside --data)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of --baseline.")] = 0,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Evaluate only the first N samples.")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Most queries per image per model call.")
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
    """Score predictions against a dataset: accuracy at IoU 0.5 and 0.75, mean IoU and more."""
    from sceneloc import evaluation

    sources = [name for name, value in
               (("--model", model), ("--predictions", predictions), ("--baseline", baseline))
               if value is not None]  # fmt: skip
    if len(sources) != 1:
        given = f" (got {' and '.join(sources)})" if sources else ""
        raise fail(f"give exactly one of --model, --predictions or --baseline{given}")
    if not data.is_file():
        raise fail(f"data file not found: {data}")
    options: dict[str, Any] = {
        "limit": limit,
        "batch_size": batch_size,
        "image_sizes": report is not None,
        "save_predictions": save_predictions,
    }
    if baseline is not None:
        evaluation.baselines.check_baseline(baseline)
    total = evaluation.scan(data, limit, check_images=model is not None)
    if model is not None:
        import sceneloc

        grounder = sceneloc.load(model, device=device, dtype=dtype)
    with progress_bar(total) as advance:
        options["progress"] = advance
        if model is not None:
            result = evaluation.evaluate_model(data, grounder, threshold=threshold, **options)
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
