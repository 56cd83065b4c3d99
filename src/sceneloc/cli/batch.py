"""``sceneloc batch``: the same queries over a folder of images, resumable, one JSON line each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sceneloc.cli.common import (
    CalibrationFile,
    Device,
    Dtype,
    Events,
    MaxPixels,
    Threshold,
    TileOverlap,
    Tiles,
    TopK,
    calibration_options,
    console,
    fail,
    locate_options,
    model_options,
)
from sceneloc.errors import SceneLocError


def batch(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Short name, hub id or local directory.")
    ],
    images: Annotated[
        str,
        typer.Option(
            help="A directory (its image files, not its subfolders') or a quoted glob pattern "
            "such as 'photos/**/*.jpg'."
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="JSON Lines results; running again resumes where it stopped.")
    ],
    query: Annotated[
        list[str] | None,
        typer.Option("--query", "-q", help="What to find; repeat for several queries."),
    ] = None,
    queries: Annotated[
        Path | None,
        typer.Option(help="Text file of queries, one a line (blank lines and # comments skipped)."),
    ] = None,
    crops: Annotated[
        Path | None, typer.Option(help="Folder for one crop per found query and image.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Threads decoding images ahead.")] = 2,
    threshold: Threshold = None,
    top_k: TopK = 5,
    device: Device = "auto",
    dtype: Dtype = "auto",
    max_pixels: MaxPixels = None,
    tiles: Tiles = "off",
    tile_overlap: TileOverlap = 0.2,
    events: Events = False,
    calibration: CalibrationFile = None,
) -> None:
    """Ask the same queries about many images; run it again to resume where it stopped."""
    import sceneloc
    from sceneloc import batch as jobs

    if (query is None) == (queries is None):
        raise fail("give the queries either with -q/--query or with --queries FILE (one of them)")
    state = jobs.process_state()
    if device == "auto" and state.num_processes > 1:
        device = str(state.device)  # each process its own GPU
    try:
        paths = jobs.expand_images(images)
        texts = sceneloc.api.normalize_queries(query or jobs.read_queries(queries))
        how = locate_options(tiles, tile_overlap, events)
        jobs.read_finished(out)  # a bad --out fails before the model loads
        grounder = sceneloc.load(
            model, device=device, dtype=dtype, **model_options(max_pixels),
            **calibration_options(calibration),
        )  # fmt: skip
        summary = jobs.run_batch(
            grounder, paths, texts, out,
            crops=crops, workers=workers, threshold=threshold, top_k=top_k, locate_options=how,
        )  # fmt: skip
    except SceneLocError as exc:
        raise fail(str(exc)) from None
    who = (
        f"process {state.process_index + 1} of {state.num_processes}: "
        if state.num_processes > 1
        else ""
    )
    console.print(
        f"{who}wrote {summary.written} answers, skipped {summary.skipped} already in {out}, "
        f"{summary.errors} unreadable image(s)",
        highlight=False,
        soft_wrap=True,
    )
