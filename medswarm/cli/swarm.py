"""`medswarm swarm ...`: a local swarm of node processes on 127.0.0.1."""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from medswarm.cli.common import console, fail, sigterm_as_interrupt
from node.errors import NodeError

app = typer.Typer(help="A local swarm of node processes on 127.0.0.1.", no_args_is_help=True)


@app.command("init")
def swarm_init(
    folder: Annotated[Path, typer.Argument(help="Folder for the swarm's node configs.")],
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 20,
    topology: Annotated[str, typer.Option(help="ring or full.")] = "ring",
    model: Annotated[str, typer.Option(help="logreg or mlp.")] = "mlp",
    ledger: Annotated[bool, typer.Option(help="A consortium chain (Anvil) in the folder.")] = False,
) -> None:
    """Configs and keys for the four heart-disease hospitals (natural split)."""
    from ledger.errors import LedgerError
    from sim.errors import SimError
    from sim.swarm import init_swarm_scenario

    try:
        path = init_swarm_scenario(
            folder, rounds=rounds, topology=topology, model=model, ledger=ledger
        )
    except (SimError, NodeError, LedgerError) as exc:
        raise fail(str(exc)) from None
    console.print(f"wrote {path}; run it with: medswarm swarm up {folder}")


@app.command("up")
def swarm_up(
    folder: Annotated[Path, typer.Argument(help="A folder made by `medswarm swarm init`.")],
    baselines: Annotated[bool, typer.Option(help="Also train local-only and pooled.")] = True,
) -> None:
    """Start one process per node, show progress, then compare with the baselines."""
    from sim.swarm import run_swarm_folder

    _run_swarm(lambda: run_swarm_folder(folder, console, baselines))


@app.command("demo")
def swarm_demo(
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/demo"),
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 20,
    ledger: Annotated[bool, typer.Option(help="Run the consortium chain (Anvil).")] = True,
) -> None:
    """The heart-disease demo: four hospitals, fully connected, with their consortium chain;
    ends with accuracy per hospital against the baselines, and contribution and reward."""
    from sim.swarm import run_demo

    _run_swarm(lambda: run_demo(out, console, rounds, ledger))


def _run_swarm(run: Callable[[], object]) -> None:
    from ledger.errors import LedgerError
    from sim.errors import SimError

    try:
        with sigterm_as_interrupt():
            run()
    except (SimError, NodeError, LedgerError) as exc:
        raise fail(str(exc)) from None
