"""`medswarm sim ...`: scenarios with faults, attacks, baselines and a report."""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from gossip.logs import LOG_LEVEL_ENV
from medswarm.cli.common import console, fail, sigterm_as_interrupt
from node.errors import NodeError
from sim.tracking import DEFAULT_URI, INSTALL, URI_ENV

if TYPE_CHECKING:
    from sim.tracking import Store

app = typer.Typer(help="Scenarios: faults, attacks, baselines, a report.", no_args_is_help=True)

# Typer does not take an option whose value is optional (`--mlflow [URI]`: its `flag_value` is
# deprecated and ignored), hence a flag and the URI apart; a URI alone turns tracking on.
MlflowUri = Annotated[
    str | None,
    typer.Option(
        "--mlflow-uri",
        metavar="URI",
        help=f"MLflow tracking URI (default ${URI_ENV}, else {DEFAULT_URI}: a local store "
        "under ./mlruns, no server needed); on `sim run`, implies --mlflow.",
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
        raise fail(escape(str(exc))) from None
    console.print(f"wrote {path}; run it with: medswarm sim run {path} --out runs/sim")


@app.command("run")
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
    mlflow: Annotated[
        bool,
        typer.Option(
            "--mlflow",
            help="Log the finished run to MLflow (--mlflow-uri; default $MLFLOW_TRACKING_URI, "
            f"else {DEFAULT_URI}). Needs: {escape(INSTALL)}",
        ),
    ] = False,
    mlflow_uri: MlflowUri = None,
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
        raise fail(escape(str(exc))) from None
    os.environ[LOG_LEVEL_ENV] = log_level.upper()  # the node processes and workers read it
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    libp2p_verbosity(log_level)
    store = None
    if mlflow or mlflow_uri is not None:  # before the run: a missing MLflow fails at once
        from sim.tracking import TrackingError, open_store

        try:
            store = open_store(mlflow_uri)
        except TrackingError as exc:
            raise fail(escape(str(exc))) from None
    try:
        with sigterm_as_interrupt():
            run_scenario(scenario, out, console, replace, backend)
    except (SimError, NodeError, LedgerError) as exc:
        raise fail(escape(str(exc))) from None
    if store is not None:
        _track(store, out, mlflow_experiment, after_run=True)


@app.command("track")
def sim_track(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (`sim run --out`).")],
    mlflow_uri: MlflowUri = None,
    mlflow_experiment: MlflowExperiment = None,
) -> None:
    """Log a finished run folder to MLflow, as `sim run --mlflow` does when the run ends:
    the scenario's settings, per-round metrics per node and their mean, the summary's numbers,
    and the summary, report and plots as artifacts (one MLflow run per seed)."""
    from sim.tracking import TrackingError, open_store

    try:
        store = open_store(mlflow_uri)
    except TrackingError as exc:
        raise fail(escape(str(exc))) from None
    _track(store, run_dir, mlflow_experiment, after_run=False)


def _track(store: "Store", folder: Path, experiment: str | None, after_run: bool) -> None:
    from sim.tracking import TrackingError, track_folder

    try:
        tracked = track_folder(store, folder, experiment)
    except TrackingError as exc:
        if after_run:
            console.print(f"the run is in {folder}; log it later with: medswarm sim track {folder}")
        raise fail(escape(str(exc))) from None
    runs = ", ".join(tracked.run_ids)
    console.print(
        f"MLflow: experiment {tracked.experiment!r} ({tracked.experiment_id}), "
        f"run {runs} in {store.uri}"
    )


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
