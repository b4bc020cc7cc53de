"""`python -m medswarm ...` is the `medswarm` command (the simulator starts node processes so)."""

from medswarm.cli import app

app(prog_name="medswarm")
