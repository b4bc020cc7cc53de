"""`medswarm sim ...`: scenarios with faults, attacks, baselines and a report."""

import contextlib
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand

from gossip.logs import LOG_LEVEL_ENV
from medswarm.cli.common import console, fail, sigterm_as_interrupt
from node.errors import NodeError

app = typer.Typer(help="Scenarios: faults, attacks, baselines, a report.", no_args_is_help=True)
DASHBOARD_PORT = 8050  # `--dashboard` without a port (as `medswarm dashboard --port`)


class OptionalDashboardPort(TyperCommand):
    """`--dashboard` alone means `--dashboard 8050`: Typer has no option whose value may be
    left out, so the bare flag is given its value before the arguments are parsed."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        given = list(args)
        for i, arg in enumerate(given):
            if arg == "--":
                break
            if arg == "--dashboard" and (i + 1 == len(given) or not given[i + 1].isdigit()):
                given[i] = f"--dashboard={DASHBOARD_PORT}"
        return list(super().parse_args(ctx, given))


@app.command("init")
def sim_init(
    path: Annotated[Path, typer.Argument(help="Where to write the example scenario.")] = Path(
        "scenario.toml"
    ),
) -> None:
    """Write a commented example scenario (the heart-disease hospitals)."""
    from sim.scenario import write_example

    try:
        write_example(path)
    except FileExistsError as exc:
        raise fail(str(exc)) from None
    console.print(f"wrote {path}; run it with: medswarm sim run {path} --out runs/sim")


@app.command("run", cls=OptionalDashboardPort)
def sim_run(
    scenario: Annotated[Path, typer.Argument(help="A scenario TOML (see `sim init`).")],
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/sim"),
    replace: Annotated[
        bool, typer.Option(help="Delete an earlier run in the run folder first.")
    ] = False,
    backend: Annotated[
        str | None,
        typer.Option(help="process, inproc, docker or ray (default: the scenario's `backend`)."),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            envvar=LOG_LEVEL_ENV,
            help="Log level of the simulator and its nodes (their node.log); DEBUG also shows "
            "libp2p's dial messages, kept out otherwise.",
        ),
    ] = "WARNING",
    dashboard: Annotated[
        int | None,
        typer.Option(
            metavar="[PORT]",
            help=f"Serve the live dashboard on 127.0.0.1:PORT ({DASHBOARD_PORT} without PORT) "
            "while the run goes, and after it until Ctrl-C.",
        ),
    ] = None,
) -> None:
    """Run a scenario (one run per seed) and write metrics, summary.json, plots and a report.
    Ctrl-C or SIGTERM stops it, and its nodes, containers and networks with it."""
    import logging

    from gossip.logs import libp2p_verbosity
    from gossip.logs import log_level as level_of
    from ledger.errors import LedgerError
    from sim.errors import SimError
    from sim.run import run_scenario

    try:
        level_of(log_level)
    except ValueError as exc:
        raise fail(str(exc)) from None
    os.environ[LOG_LEVEL_ENV] = log_level.upper()  # the node processes and workers read it
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    libp2p_verbosity(log_level)
    from medswarm.web.child import DashboardError

    try:
        with sigterm_as_interrupt():
            if dashboard is None:
                run_scenario(scenario, out, console, replace, backend)
            else:
                run_with_dashboard(scenario, out, console, replace, backend, dashboard)
    except (SimError, NodeError, LedgerError, DashboardError) as exc:
        raise fail(str(exc)) from None


def run_with_dashboard(
    path: Path, out: Path, console: Console, replace: bool, backend: str | None, port: int
) -> None:
    """The run with its dashboard in a child process: started (on a free port) before the
    rounds, kept after them until Ctrl-C or SIGTERM."""
    from medswarm.web.child import DashboardChild
    from sim.run import remove_earlier_run, run_scenario, with_backend
    from sim.scenario import load_scenario

    child = DashboardChild(out, port)  # a port in use is an error before anything is done
    scenario = load_scenario(path)
    if backend is not None:
        scenario = with_backend(scenario, backend)
    if replace:  # before the dashboard starts reading the folder
        remove_earlier_run(out, console)
    out.mkdir(parents=True, exist_ok=True)
    with child:
        console.print(f"dashboard: {child.url}", highlight=False)
        run_scenario(scenario, out, console)
        console.print(f"run finished; dashboard at {child.url} until Ctrl-C", highlight=False)
        with contextlib.suppress(KeyboardInterrupt):
            child.wait()
        console.print("dashboard stopped")


@app.command("fedavg-process", hidden=True)
def sim_fedavg_process(
    role: Annotated[str, typer.Argument(help="server or client.")],
    config: Annotated[Path, typer.Argument(help="The JSON config run_fedavg_network wrote.")],
) -> None:
    """One process of a networked FedAvg run; `sim.fedavg_network` starts them."""
    import logging
    import os

    from sim.fedavg_network import run_process

    code = run_process(role, config)
    logging.shutdown()
    # Skip tearing down the ~2000 modules torch loads lazily (sympy, dynamo): one to several
    # seconds per process that every run would wait for. Results and logs are written by now.
    os._exit(code)


@app.command("worker", hidden=True)
def sim_worker(
    folder: Annotated[Path, typer.Argument(help="The run folder (nodes/<name>/node.toml).")],
) -> None:
    """One worker process of the inproc backend: runs the nodes the simulator names on stdin
    (see sim/pool.py)."""
    import logging
    import os

    from sim.pool import serve_worker

    serve_worker(folder)
    logging.shutdown()
    os._exit(0)  # as fedavg-process: skip tearing down torch's lazily loaded modules
