"""``sceneloc data prepare``: convert a grounding dataset to sceneloc's JSON Lines format.

A thin layer over :mod:`sceneloc.data` converters. Image paths in the output are relative
to the output file's folder when the images lie inside it, absolute otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from sceneloc.cli.common import console, fail
from sceneloc.data.convert import ConversionStats
from sceneloc.data.format import Sample, write_samples

app = typer.Typer(
    help="Convert a grounding dataset to sceneloc's JSON Lines sample format.",
    no_args_is_help=True,
)

Out = Annotated[Path, typer.Option("--out", "-o", help="JSON Lines file to write.")]
SkipBad = Annotated[
    bool,
    typer.Option(
        "--skip-bad", help="Skip malformed records (logged and counted) instead of stopping."
    ),
]
SplitName = Annotated[
    str | None, typer.Option("--split", help="Split name written in every sample.")
]


def _write(out: Path, samples: Iterable[Sample], stats: ConversionStats) -> None:
    try:
        write_samples(out, samples)
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    skipped = stats.skipped_summary()
    noun = "sample" if stats.samples == 1 else "samples"
    message = f"wrote {stats.samples} {noun} to {out}" + (f"; {skipped}" if skipped else "")
    console.print(message, markup=False, highlight=False, soft_wrap=True)


@app.command()
def refcoco(
    refer_root: Annotated[
        Path, typer.Option(help="Folder holding <dataset>/refs(<split-by>).p and instances.json.")
    ],
    images: Annotated[Path, typer.Option(help="Folder of the COCO train2014 images.")],
    split: Annotated[str, typer.Option(help="Split to convert (val, testA, ...) or 'all'.")],
    out: Out,
    dataset: Annotated[str, typer.Option(help="refcoco, refcoco+ or refcocog.")] = "refcoco",
    split_by: Annotated[
        str, typer.Option(help="refcoco: unc or google; refcoco+: unc; refcocog: umd or google.")
    ] = "unc",
    skip_bad: SkipBad = False,
) -> None:
    """RefCOCO/+/g (refer layout): one sample per referring sentence."""
    from sceneloc.data.refcoco import convert_refcoco

    stats = ConversionStats()
    samples = convert_refcoco(
        refer_root, images, dataset, split_by, split,
        relative_to=out.parent, skip_bad=skip_bad, stats=stats,
    )  # fmt: skip
    _write(out, samples, stats)


@app.command()
def grefcoco(
    root: Annotated[
        Path, typer.Option(help="Folder holding grefs(<split-by>).json and instances.json.")
    ],
    images: Annotated[Path, typer.Option(help="Folder of the COCO train2014 images.")],
    split: Annotated[
        str, typer.Option(help="Split to convert (train, val, testA, testB) or 'all'.")
    ],
    out: Out,
    split_by: Annotated[str, typer.Option(help="The refs file's split scheme (unc).")] = "unc",
    skip_bad: SkipBad = False,
) -> None:
    """gRefCOCO: one sample per sentence, with every target box (none for no-target ones)."""
    from sceneloc.data.grefcoco import convert_grefcoco

    stats = ConversionStats()
    samples = convert_grefcoco(
        root, images, split, split_by, relative_to=out.parent, skip_bad=skip_bad, stats=stats
    )
    _write(out, samples, stats)


@app.command("flickr30k-entities")
def flickr30k_entities(
    root: Annotated[Path, typer.Option(help="Folder holding Sentences/ and Annotations/.")],
    split_file: Annotated[Path, typer.Option(help="Image ids to convert, one a line.")],
    out: Out,
    split: SplitName = None,
    images: Annotated[
        Path | None, typer.Option(help="Image folder (default: <root>/flickr30k-images).")
    ] = None,
    skip_bad: SkipBad = False,
) -> None:
    """Flickr30k Entities: one sample per phrase with a box (split name: the file's stem)."""
    from sceneloc.data.flickr30k import convert_flickr30k_entities

    stats = ConversionStats()
    samples = convert_flickr30k_entities(
        root, split_file, split,
        images=images, relative_to=out.parent, skip_bad=skip_bad, stats=stats,
    )  # fmt: skip
    _write(out, samples, stats)


@app.command()
def odvg(
    input: Annotated[Path, typer.Option("--input", help="ODVG JSON Lines file.")],
    images: Annotated[Path, typer.Option(help="Folder the records' filenames are under.")],
    out: Out,
    split: SplitName = None,
    label_map: Annotated[
        Path | None, typer.Option(help="Label map JSON naming instances without 'category'.")
    ] = None,
    skip_bad: SkipBad = False,
) -> None:
    """Open-GroundingDino ODVG: a sample per phrase or per category in each image."""
    from sceneloc.data.odvg import convert_odvg

    stats = ConversionStats()
    samples = convert_odvg(
        input, images, split,
        label_map=label_map, relative_to=out.parent, skip_bad=skip_bad, stats=stats,
    )  # fmt: skip
    _write(out, samples, stats)


@app.command()
def coco(
    annotations: Annotated[Path, typer.Option(help="COCO detection JSON (instances_*.json).")],
    images: Annotated[Path, typer.Option(help="Folder of the file's images.")],
    out: Out,
    split: SplitName = None,
    include_crowd: Annotated[
        bool, typer.Option(help="Keep crowd annotations as targets (left out by default).")
    ] = False,
    skip_bad: SkipBad = False,
) -> None:
    """COCO detection: one sample per category in each image, its name as the query."""
    from sceneloc.data.coco import convert_coco

    stats = ConversionStats()
    samples = convert_coco(
        annotations, images, split,
        relative_to=out.parent, include_crowd=include_crowd, skip_bad=skip_bad, stats=stats,
    )  # fmt: skip
    _write(out, samples, stats)


@app.command("visual-genome")
def visual_genome(
    regions: Annotated[Path, typer.Option(help="Visual Genome region_descriptions.json.")],
    image_data: Annotated[Path, typer.Option(help="Visual Genome image_data.json.")],
    images: Annotated[Path, typer.Option(help="Folder holding VG_100K/ and VG_100K_2/.")],
    out: Out,
    split_file: Annotated[
        Path | None,
        typer.Option(help='Splits as DenseCap gives them: {"train": [image ids], "val": ...}.'),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Split of every sample without --split-file.")
    ] = None,
    skip_bad: SkipBad = False,
) -> None:
    """Visual Genome region descriptions: one sample per description (dense captioning)."""
    from sceneloc.data.visual_genome import convert_visual_genome

    stats = ConversionStats()
    samples = convert_visual_genome(
        regions, image_data, images,
        split_file=split_file, split=split, relative_to=out.parent, skip_bad=skip_bad,
        stats=stats,
    )  # fmt: skip
    _write(out, samples, stats)
