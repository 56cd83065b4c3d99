"""``sceneloc calibrate``: fit a model's score to the probability that the referent is there
(:mod:`sceneloc.calibration`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sceneloc.cli.common import Device, Dtype, Model, console, fail
from sceneloc.registry import Task, default_model


def calibrate(
    data: Annotated[
        Path, typer.Option("--data", help="Validation samples (sceneloc's JSON Lines format).")
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Folder to write: the calibrated model directory (a local model), or the "
            "calibration file for a hub model; report.json and report.md in both."
        ),
    ],
    model: Model = None,
    limit: Annotated[
        int, typer.Option(min=1, help="Fit on the first N samples (and as many absent queries).")
    ] = 500,
    seed: Annotated[int, typer.Option(help="Random seed of the absent queries.")] = 0,
    method: Annotated[
        str,
        typer.Option(
            help="platt (any model: its score's logit, rescaled), presence (a native model's "
            "own two-input presence score, refitted) or auto (presence where there is one)."
        ),
    ] = "auto",
    device: Device = "auto",
    dtype: Dtype = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON to stdout.")] = False,
) -> None:
    """Fit the model's score to the probability that the referent is there, from the
    validation queries and as many whose referent is absent; then 0.5 means "not there"."""
    import sceneloc
    from sceneloc.calibration import (
        METHODS,
        check_out,
        describe,
        fit_calibration,
        write_calibrated,
    )
    from sceneloc.registry import resolve

    if not data.is_file():
        raise fail(f"data file not found: {data}")
    if method not in METHODS:
        raise fail(f"unknown calibration method {method!r} (use {', '.join(METHODS)})")
    model = model or default_model(Task.LOCATE, sceneloc.api.resolve_device(device))
    checkpoint = resolve(model, Task.LOCATE).checkpoint
    check_out(checkpoint, out)
    grounder = sceneloc.load(model, device=device, dtype=dtype)
    calibration = fit_calibration(grounder, data, limit=limit, seed=seed, method=method)
    path = write_calibrated(calibration, checkpoint, out)
    if as_json:
        typer.echo(json.dumps(calibration.to_dict()))
        return
    figures = calibration.figures
    table = Table(
        title=f"{model}: {figures['queries']['present']} present and "
        f"{figures['queries']['absent']} absent queries of {data}",
        title_justify="left",
    )
    for column in ("score", "threshold", "absent refused", "present kept", "kept, right box",
                   "ROC AUC"):  # fmt: skip
        table.add_column(column, justify="left" if column == "score" else "right")
    for name in ("before", "after"):
        row = figures[name]
        table.add_row(name, f"{row['threshold']:g}", f"{row['absent_refused']:.3f}",
                      f"{row['present_kept']:.3f}", f"{row['present_kept_right_box']:.3f}",
                      f"{row['roc_auc']:.3f}")  # fmt: skip
    console.print(table)
    console.print(describe(calibration))
    if path is None or (out / "config.json").is_file():
        console.print(f"wrote {out}: a calibrated model directory (--model {out})")
    else:
        console.print(f"wrote {path}: use it with --model {model} --calibration {path}")
