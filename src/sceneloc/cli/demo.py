"""``sceneloc demo``: the bundled model on a synthetic dense scene, offline, in seconds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from sceneloc.cli.common import console, fail
from sceneloc.cli.locate import print_table
from sceneloc.errors import SceneLocError


def demo(
    out: Annotated[
        Path, typer.Option(help="Folder for the scene, the annotated image, crops and JSON.")
    ] = Path("sceneloc-demo"),
    seed: Annotated[int, typer.Option(min=0, help="Which scene to draw.")] = 2024,
) -> None:
    """Draw a dense scene and ask the bundled model about it (no network needed)."""
    import sceneloc
    from sceneloc.demo import DEMO_MODEL, demo_scene

    scene = demo_scene(seed)
    try:
        answer = sceneloc.load(DEMO_MODEL, device="cpu").locate(scene.image, scene.queries)
        answer = dataclasses.replace(answer, path=str(out / "scene.png"))
        answer.save(out, "scene")
    except SceneLocError as exc:
        raise fail(str(exc)) from None
    payload = answer.to_dict()
    try:
        scene.image.save(out / "scene.png")
        (out / "scene.json").write_text(json.dumps(payload, indent=2))
    except OSError as exc:
        raise fail(f"cannot write to {out}: {exc.strerror or exc}") from None
    print_table(payload)
    console.print(
        f"wrote the scene, the annotated image, one crop per found query and scene.json to {out}"
    )
