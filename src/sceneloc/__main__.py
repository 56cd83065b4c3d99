"""``python -m sceneloc`` (and ``accelerate launch -m sceneloc train ...``) run the CLI."""

from sceneloc.cli import app

app()
