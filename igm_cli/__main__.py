"""`python -m igm_cli` runs the CLI."""

from .cli import app

app()
