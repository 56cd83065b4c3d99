"""``sceneloc locate`` and ``sceneloc models``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sceneloc.cli.common import (
    CalibrationFile,
    Device,
    Dtype,
    Events,
    MaxPixels,
    Model,
    Threshold,
    TileOverlap,
    Tiles,
    TopK,
    answer_table,
    calibration_options,
    console,
    fail,
    locate_options,
    model_options,
)
from sceneloc.errors import SceneLocError
from sceneloc.registry import Task, default_model


def locate(
    image: Annotated[Path, typer.Argument(help="Image file (JPEG, PNG, WebP, TIFF, ...).")],
    query: Annotated[
        list[str], typer.Option("--query", "-q", help="What to find; repeat for several queries.")
    ],
    model: Model = None,
    threshold: Threshold = None,
    top_k: TopK = 5,
    device: Device = "auto",
    dtype: Dtype = "auto",
    max_pixels: MaxPixels = None,
    tiles: Tiles = "off",
    tile_overlap: TileOverlap = 0.2,
    events: Events = False,
    calibration: CalibrationFile = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the annotated image and one crop per query.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON to stdout.")] = False,
    masks: Annotated[
        bool,
        typer.Option(
            "--masks",
            help="From a model that segments: each candidate's mask (COCO RLE) in --json, "
            "masks shaded on the --out image and crops cut out along them (RGBA).",
        ),
    ] = False,
) -> None:
    """Locate each query in IMAGE and print its box, score and candidates."""
    import sceneloc

    try:
        picture = sceneloc.load_image(image)  # fail fast on bad input, before loading a model
        queries = sceneloc.api.normalize_queries(query)
        how = locate_options(tiles, tile_overlap, events)
        model = model or default_model(Task.LOCATE, sceneloc.api.resolve_device(device))
        if masks:
            require_masks(model)
        grounder = sceneloc.load(
            model, device=device, dtype=dtype, **model_options(max_pixels),
            **calibration_options(calibration),
        )  # fmt: skip
        answer = grounder.locate(picture.image, queries, threshold=threshold, top_k=top_k, **how)
        answer = dataclasses.replace(answer, path=str(image))
        if out is not None:
            answer.save(out, image.stem, masked=masks)
    except SceneLocError as exc:
        raise fail(str(exc)) from None
    payload = answer.to_dict(masks=masks)
    if as_json:
        typer.echo(json.dumps(payload))
    else:
        print_table(payload)
        if out is not None:
            console.print(f"wrote the annotated image and crops to {out}")


def require_masks(model: str) -> None:
    """Refuse ``--masks`` for a model that gives boxes only, before loading it."""
    from sceneloc.registry import Capability, list_models, resolve

    if Capability.MASKS in resolve(model, Task.LOCATE).family.capabilities:
        return
    able = [m.name for m in list_models(Task.LOCATE) if Capability.MASKS in m.family.capabilities]
    raise SceneLocError(
        f"--masks: {model} gives boxes only; models that segment: {', '.join(able) or 'none'}"
    )


def print_table(payload: dict) -> None:
    """One row per query; an event box's participants below it, each with its own box."""
    table = answer_table(payload, [("#", "right"), ("query", "left"),
                                   ("box (x1, y1, x2, y2)", "left"), ("score", "right"),
                                   ("candidates", "right")])  # fmt: skip
    for index, result in enumerate(payload["results"], start=1):
        box = result["box"]
        table.add_row(
            str(index),
            escape(result["query"]),
            ", ".join(f"{v:.1f}" for v in box) if box else "[dim]not found[/]",
            f"{result['score']:.3f}" if result["score"] is not None else "-",
            str(len(result["candidates"])),
        )
        for part in result.get("parts") or ():
            table.add_row(
                "", f"[dim]  part: {escape(part['phrase'])}[/]",
                ", ".join(f"{v:.1f}" for v in part["box"]), f"{part['score']:.3f}", "",
            )  # fmt: skip
    console.print(table)


def models() -> None:
    """List the available models, the tasks they serve, their checkpoints and what each can do."""
    from sceneloc.registry import DEFAULT_MODELS, list_models

    defaults: dict[str, list[str]] = {}
    for task, by_device in DEFAULT_MODELS.items():
        for kind, name in by_device.items():
            defaults.setdefault(name, []).append(f"{task.value} on a {kind.upper()}")
    table = Table(title="sceneloc models (any hub id or local directory of these types works too)")
    for column in ("name", "tasks", "checkpoint", "backend", "can do", "about"):
        table.add_column(column, overflow="fold")
    for info in list_models():
        marker = f" (default for {', '.join(defaults[info.name])})" if info.name in defaults else ""
        table.add_row(
            info.name + marker, ", ".join(info.family.task_names()), info.checkpoint,
            info.family.name, ", ".join(info.family.capability_names()), info.description,
        )  # fmt: skip
    console.print(table)
