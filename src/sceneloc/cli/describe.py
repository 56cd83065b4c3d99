"""``sceneloc describe``: say in words what regions of an image show."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sceneloc.cli.common import DescribeModel, Device, Dtype, answer_table, console
from sceneloc.registry import Task


def describe(
    image: Annotated[Path, typer.Argument(help="Image file (JPEG, PNG, WebP, TIFF, ...).")],
    box: Annotated[
        list[str] | None,
        typer.Option(
            "--box",
            "-b",
            help="Region to describe as x1,y1,x2,y2 in pixels; repeat for several. None: the "
            "model finds the regions (dense captions).",
        ),
    ] = None,
    model: DescribeModel = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(min=1, help="Longest caption in tokens (default: the model's).")
    ] = None,
    beams: Annotated[
        int | None, typer.Option(min=1, help="Beam search width (default: the model card's).")
    ] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    out: Annotated[
        Path | None, typer.Option(help="Folder for the annotated image and one crop per region.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON to stdout.")] = False,
) -> None:
    """Describe each --box of IMAGE (or, without boxes, the regions the model finds)."""
    import sceneloc

    picture = sceneloc.load_image(image)  # fail fast on bad input, before loading a model
    boxes = None if not box else sceneloc.api.region_boxes(box, *picture.image.size)
    describer = sceneloc.load(model, task=Task.DESCRIBE, device=device, dtype=dtype)
    answer = describer.describe(
        picture.image, boxes, max_new_tokens=max_new_tokens, num_beams=beams
    )
    answer = dataclasses.replace(answer, path=str(image))
    if out is not None:
        answer.save(out, image.stem)
    payload = answer.to_dict()
    if as_json:
        typer.echo(json.dumps(payload))
        return
    print_regions(payload)
    if out is not None:
        console.print(f"wrote the annotated image and one crop per region to {out}")


def print_regions(payload: dict) -> None:
    table = answer_table(payload, [("#", "right"), ("region (x1, y1, x2, y2)", "left"),
                                   ("caption", "left"), ("score", "right")])  # fmt: skip
    if not payload["regions"]:
        table.caption = "no regions found"
    for index, region in enumerate(payload["regions"], start=1):
        score = region["score"]
        table.add_row(
            str(index),
            ", ".join(f"{v:.1f}" for v in region["box"]),
            escape(region["caption"]),  # the model's words, never markup
            f"{score:.3f}" if score is not None else "-",
        )
    console.print(table)
