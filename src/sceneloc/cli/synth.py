"""``sceneloc data synth``: a synthetic dense-scene grounding dataset, reproducible from a seed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sceneloc.cli.common import console, fail
from sceneloc.errors import SceneLocError

DEFAULT_SPLITS = "train=0.7,val=0.1,test=0.1,compositional=0.1"


def synth(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for images/, annotations.jsonl, descriptions.jsonl, scenes.jsonl.",
        ),
    ],
    num_images: Annotated[
        int, typer.Option("--num-images", "-n", help="Images in all, divided by --splits.")
    ],
    seed: Annotated[
        int, typer.Option(help="Same seed: byte-identical dataset; another seed: another one.")
    ],
    size: Annotated[int, typer.Option(help="Side of the square images, in pixels.")] = 512,
    min_objects: Annotated[int, typer.Option(help="Fewest shapes in an image.")] = 20,
    max_objects: Annotated[int, typer.Option(help="Most shapes in an image.")] = 60,
    queries_per_image: Annotated[
        int, typer.Option(help="Queries per image, a mix of the four types.")
    ] = 6,
    splits: Annotated[
        str,
        typer.Option(
            help="Proportions of --num-images per split (train, val, test, compositional); "
            "images are numbered in that order."
        ),
    ] = DEFAULT_SPLITS,
    colors: Annotated[
        str | None,
        typer.Option(help="Colours to draw, comma-separated (e.g. red,green,blue); default all."),
    ] = None,
    shapes: Annotated[
        str | None,
        typer.Option(help="Shapes to draw, comma-separated (e.g. circle,square); default all."),
    ] = None,
    background: Annotated[
        str, typer.Option(help="Ground: texture (default), light, dark or noise.")
    ] = "texture",
    object_size_base: Annotated[
        int | None,
        typer.Option(
            help="Draw shapes at the pixel sizes of a scene of this side (large objects in "
            "small images); default --size."
        ),
    ] = None,
    query_types: Annotated[
        str | None,
        typer.Option(
            help="Query types to ask, comma-separated (attribute, relation, ordinal, group; "
            "opt-in: multiple, absent); default the first four."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a dataset already in --out.")] = False,
) -> None:
    """Make a synthetic grounding dataset: dense scenes of coloured shapes, one referent a query.

    The compositional split asks only about colour-shape pairs train, val and test never name
    (those of the held-out pairs inside --colors and --shapes; none there: leave it out of
    --splits).
    """
    from sceneloc.data.synth import generate, make_domain

    columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar = Progress(*columns, console=console, transient=True)
    task = bar.add_task("synth", total=num_images)

    started = []

    def advance(done: int, total: int) -> None:
        if not started:  # shown only once the settings have proved good
            bar.start()
            started.append(True)
        bar.update(task, completed=done)

    try:
        domain = make_domain(colors, shapes, background, object_size_base, query_types)
        stats = generate(
            out, num_images, seed, size=size, min_objects=min_objects,
            max_objects=max_objects, queries_per_image=queries_per_image, splits=splits,
            overwrite=overwrite, progress=advance, domain=domain,
        )  # fmt: skip
    except SceneLocError as exc:
        raise fail(str(exc)) from None
    finally:
        if started:
            bar.stop()
    table = Table(title=f"{stats.out_dir} (seed {seed})", title_justify="left")
    for column in ("split", "images", "queries"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, count in stats.images.items():
        table.add_row(name, str(count), str(stats.samples[name]))
    console.print(table)
    kinds = ", ".join(f"{count} {kind}" for kind, count in stats.types.items())
    console.print(
        f"{stats.num_images} images, {stats.num_samples} queries ({kinds}), "
        f"{stats.descriptions} descriptions "
        f"in {stats.seconds:.1f} s ({stats.images_per_minute:.0f} images/min)"
    )
