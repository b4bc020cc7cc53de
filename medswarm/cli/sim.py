"""`medswarm sim ...`: scenarios with faults, attacks, baselines and a report."""

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand

from gossip.logs import LOG_LEVEL_ENV
from medswarm.cli.common import console, fail, sigterm_as_interrupt
from node.errors import NodeError
from sim.tracking import DEFAULT_URI, INSTALL, URI_ENV

if TYPE_CHECKING:
    from sim.tracking import Store

app = typer.Typer(help="Scenarios: faults, attacks, baselines, a report.", no_args_is_help=True)
DASHBOARD_PORT = 8050  # `--dashboard` without a port (as `medswarm dashboard --port`)
DEFAULT_STORE = "default"  # `--mlflow` without a URI: $MLFLOW_TRACKING_URI, else DEFAULT_URI

# Options whose value may be left out, the value they then take, and what a value looks like.
OPTIONAL_VALUES: dict[str, tuple[str, Callable[[str], bool]]] = {
    "--dashboard": (str(DASHBOARD_PORT), str.isdigit),
    "--mlflow": (DEFAULT_STORE, lambda arg: not arg.startswith("-")),
}


class OptionalValues(TyperCommand):
    """`--dashboard` alone means `--dashboard 8050`, `--mlflow` alone the default store: Typer
    has no option whose value may be left out (`flag_value` is ignored), so a bare one is given
    its value before the arguments are parsed."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        given = list(args)
        for i, arg in enumerate(given):
            if arg == "--":
                break
            if arg in OPTIONAL_VALUES:
                default, is_value = OPTIONAL_VALUES[arg]
                if i + 1 == len(given) or not is_value(given[i + 1]):
                    given[i] = f"{arg}={default}"
        return list(super().parse_args(ctx, given))


MlflowUri = Annotated[
    str | None,
    typer.Option(
        "--mlflow",
        metavar="[URI]",
        help=f"Log the finished run to MLflow at URI (without URI: ${URI_ENV}, else "
        f"{DEFAULT_URI}, a local store under ./mlruns, no server needed). Needs: "
        f"{escape(INSTALL)}",
        show_default=False,
    ),
]
MlflowExperiment = Annotated[
    str | None,
    typer.Option(
        "--mlflow-experiment",
        metavar="NAME",
        help="MLflow experiment (default: the scenario's name).",
        show_default=False,
    ),
]


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


@app.command("run", cls=OptionalValues)
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
    mlflow: MlflowUri = None,
    mlflow_experiment: MlflowExperiment = None,
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

    store = None
    if mlflow is not None:  # before the run: a missing MLflow fails at once
        from sim.tracking import TrackingError, open_store

        try:
            store = open_store(None if mlflow == DEFAULT_STORE else mlflow)
        except TrackingError as exc:
            raise fail(str(exc)) from None
    try:
        with sigterm_as_interrupt():
            if dashboard is None:
                run_scenario(scenario, out, console, replace, backend)
            else:
                run_with_dashboard(
                    scenario, out, console, replace, backend, dashboard, store, mlflow_experiment
                )
    except (SimError, NodeError, LedgerError, DashboardError) as exc:
        raise fail(str(exc)) from None
    if store is not None and dashboard is None:
        _track(store, out, mlflow_experiment, after_run=True)


@app.command("track", cls=OptionalValues)
def sim_track(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (`sim run --out`).")],
    mlflow: MlflowUri = DEFAULT_STORE,
    mlflow_experiment: MlflowExperiment = None,
) -> None:
    """Log a finished run folder to MLflow, as `sim run --mlflow` does when the run ends:
    the scenario's settings, per-round metrics per node and their mean, the summary's numbers,
    and the summary, report and plots as artifacts (one MLflow run per seed)."""
    from sim.tracking import TrackingError, open_store

    try:
        store = open_store(None if mlflow == DEFAULT_STORE else mlflow)
    except TrackingError as exc:
        raise fail(str(exc)) from None
    _track(store, run_dir, mlflow_experiment, after_run=False)


def _track(store: "Store", folder: Path, experiment: str | None, after_run: bool) -> None:
    from sim.tracking import TrackingError, track_folder

    try:
        tracked = track_folder(store, folder, experiment)
    except TrackingError as exc:
        if after_run:
            console.print(f"the run is in {folder}; log it later with: medswarm sim track {folder}")
        raise fail(str(exc)) from None
    runs = ", ".join(tracked.run_ids)
    console.print(
        f"MLflow: experiment {tracked.experiment!r} ({tracked.experiment_id}), "
        f"run {runs} in {store.uri}"
    )


def run_with_dashboard(
    path: Path,
    out: Path,
    console: Console,
    replace: bool,
    backend: str | None,
    port: int,
    store: "Store | None" = None,
    experiment: str | None = None,
) -> None:
    """The run with its dashboard in a child process: started (on a free port) before the
    rounds, kept after them until Ctrl-C or SIGTERM; with `store`, the run is logged to MLflow
    before the wait."""
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
        if store is not None:
            _track(store, out, experiment, after_run=True)
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
