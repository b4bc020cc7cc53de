"""The `medswarm` command line: node, swarm, sim, bench and ledger sub-commands; stats and
dashboard.

Each group's module is imported only when its command runs (and for the top-level help), so
`medswarm node run` does not pay for web3 and the ledger CLI: a node's start-up is mostly
imports. Heavy imports (torch, libp2p) happen inside the commands so `--help` stays quick.
"""

import importlib
from typing import Any

import typer
from typer.core import TyperGroup

GROUPS = ("node", "swarm", "sim", "bench", "ledger", "stats", "dashboard")


class LazyGroups(TyperGroup):
    """The command groups, each built from `medswarm.cli.<name>.app` when first asked for
    (`stats` and `dashboard` are single commands: their apps have one)."""

    # Typer's own (vendored) click types: Any keeps this independent of where they live.
    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *GROUPS]

    def get_command(self, ctx: Any, name: str) -> Any:
        if name not in GROUPS:
            return super().get_command(ctx, name)
        group = typer.main.get_command(importlib.import_module(f"medswarm.cli.{name}").app)
        group.name = name
        return group


app = typer.Typer(
    cls=LazyGroups,
    help="medswarm: hospitals train one model together, with no central server.",
    no_args_is_help=True,
)


@app.callback()
def main() -> None:
    """medswarm: hospitals train one model together, with no central server."""
    from node.allocator import give_back_freed_memory

    give_back_freed_memory()  # every command: nodes, simulator, workers, pages


__all__ = ["app"]
