"""``sceneloc data``: convert grounding datasets to the sample format, make synthetic scenes."""

from __future__ import annotations

import typer

from sceneloc.cli import prepare, synth

app = typer.Typer(
    help="Convert grounding datasets to sceneloc's JSON Lines format; make synthetic scenes.",
    no_args_is_help=True,
)
app.add_typer(prepare.app, name="prepare")
app.command()(synth.synth)
