"""``sceneloc demo``: the bundled model on a synthetic dense scene, offline, in seconds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from sceneloc.cli.common import answer_table, console, fail
from sceneloc.cli.locate import print_table
from sceneloc.errors import SceneLocError

if TYPE_CHECKING:
    from sceneloc.demo import RoundTrip


def demo(
    out: Annotated[
        Path, typer.Option(help="Folder for the scene, the annotated image, crops and JSON.")
    ] = Path("sceneloc-demo"),
    seed: Annotated[int, typer.Option(min=0, help="Which scene to draw.")] = 2024,
) -> None:
    """Draw a dense scene, ask the bundled grounder about it, then describe some of its
    regions with the bundled describer and locate each description again (no network)."""
    import sceneloc
    from sceneloc.demo import DEMO_DESCRIBER, DEMO_MODEL, demo_scene, describe_and_locate

    scene = demo_scene(seed)
    path = str(out / "scene.png")
    try:
        grounder = sceneloc.load(DEMO_MODEL, device="cpu")
        answer = dataclasses.replace(grounder.locate(scene.image, scene.queries), path=path)
        answer.save(out, "scene")
        describer = sceneloc.load(DEMO_DESCRIBER, task="describe", device="cpu")
        present = [box for box in scene.truths if box is not None]
        described, trips = describe_and_locate(scene.image, present, describer, grounder)
        described = dataclasses.replace(described, path=path)
        described.save(out, "scene.described")
    except SceneLocError as exc:
        raise fail(str(exc)) from None
    payload = answer.to_dict()
    try:
        scene.image.save(out / "scene.png")
        (out / "scene.json").write_text(json.dumps(payload, indent=2))
        (out / "scene.described.json").write_text(json.dumps(described.to_dict(), indent=2))
    except OSError as exc:
        raise fail(f"cannot write to {out}: {exc.strerror or exc}") from None
    print_table(payload)
    print_round_trips(described.to_dict(), trips)
    console.print(
        f"wrote the scene, the annotated images, one crop per found query and per described "
        f"region, scene.json and scene.described.json to {out}"
    )


def print_round_trips(payload: dict, trips: list[RoundTrip]) -> None:
    """Each region, its description, and where the grounder found the description."""
    table = answer_table(payload | {"model": f"{payload['model']}, located by native-synth"},
                         [("#", "right"), ("region", "left"), ("description", "left"),
                          ("found again at", "left"), ("IoU", "right")])  # fmt: skip
    for index, trip in enumerate(trips, start=1):
        found = ", ".join(f"{v:.0f}" for v in trip.found) if trip.found else "not found"
        region = ", ".join(f"{v:.0f}" for v in trip.box)
        table.add_row(str(index), region, escape(trip.caption), found, f"{trip.iou:.2f}")
    console.print(table)
