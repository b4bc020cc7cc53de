"""`python -m node ...` is the `medswarm` command (used to start node processes)."""

from node.cli import app

app(prog_name="medswarm")
