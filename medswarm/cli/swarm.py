"""`medswarm swarm ...`: a local swarm of node processes on 127.0.0.1."""

from pathlib import Path
from typing import Annotated

import typer

from medswarm.cli.common import console, fail
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
    from sim.consortium import ConsortiumPlan
    from sim.local_swarm import init_heart_disease_swarm

    try:
        paths = init_heart_disease_swarm(
            folder,
            rounds=rounds,
            topology=topology,
            model=model,
            ledger=ConsortiumPlan() if ledger else None,
        )
    except (ValueError, FileExistsError, LedgerError) as exc:
        raise fail(str(exc)) from None
    console.print(f"wrote {len(paths)} node configs under {folder}")


@app.command("up")
def swarm_up(
    folder: Annotated[Path, typer.Argument(help="A folder made by `medswarm swarm init`.")],
    baselines: Annotated[bool, typer.Option(help="Also train local-only and pooled.")] = True,
) -> None:
    """Start one process per node, show progress, then compare with the baselines."""
    _run_swarm(folder, baselines)


@app.command("demo")
def swarm_demo(
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/demo"),
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 20,
    ledger: Annotated[bool, typer.Option(help="Run the consortium chain (Anvil).")] = True,
) -> None:
    """The heart-disease demo: four hospitals, fully connected, with their consortium chain;
    ends with accuracy per hospital against the baselines, and contribution and reward."""
    import shutil

    from sim.consortium import ConsortiumPlan
    from sim.local_swarm import init_heart_disease_swarm

    if (out / "swarm.json").exists():  # a previous demo run: start afresh
        console.print(f"replacing the previous demo run in {out}")
        shutil.rmtree(out)
    plan = ConsortiumPlan() if ledger else None
    init_heart_disease_swarm(out, rounds=rounds, topology="full", model="mlp", ledger=plan)
    _run_swarm(out, baselines=True)


def _run_swarm(folder: Path, baselines: bool) -> None:
    from ledger.errors import LedgerError
    from sim.local_swarm import SwarmError, run_swarm

    try:
        run_swarm(folder, console, baselines=baselines)
    except (SwarmError, NodeError, LedgerError) as exc:
        raise fail(str(exc)) from None
