"""The `medswarm` command line: node, swarm, sim, bench and ledger sub-commands.

Heavy imports (torch, libp2p) happen inside the commands so `--help` stays quick.
"""

import typer

from medswarm.cli import bench, ledger, node, sim, swarm

app = typer.Typer(
    help="medswarm: hospitals train one model together, with no central server.",
    no_args_is_help=True,
)
app.add_typer(node.app, name="node")
app.add_typer(swarm.app, name="swarm")
app.add_typer(sim.app, name="sim")
app.add_typer(bench.app, name="bench")
app.add_typer(ledger.app, name="ledger")

__all__ = ["app"]
