"""The `medswarm` command line: node, swarm, ledger and bench sub-commands.

Heavy imports (torch, libp2p) happen inside the commands so `--help` stays quick.
"""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ledger import cli as ledger_cli
from node.errors import NodeError

app = typer.Typer(
    help="medswarm: hospitals train one model together, with no central server.",
    no_args_is_help=True,
)
node_app = typer.Typer(help="Run one hospital node.", no_args_is_help=True)
swarm_app = typer.Typer(help="A local swarm of node processes on 127.0.0.1.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: print numbers and write JSON.", no_args_is_help=True)
sim_app = typer.Typer(help="Scenarios: faults, attacks, baselines, a report.", no_args_is_help=True)
app.add_typer(node_app, name="node")
app.add_typer(swarm_app, name="swarm")
app.add_typer(sim_app, name="sim")
app.add_typer(bench_app, name="bench")
app.add_typer(ledger_cli.app, name="ledger")

console = Console(stderr=True)
JsonOut = Annotated[Path, typer.Option("--json", help="Write the results as JSON here.")]


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(2)


@node_app.command("init")
def node_init(
    folder: Annotated[Path, typer.Argument(help="Folder for node.toml and identity.key.")],
    name: Annotated[str, typer.Option(help="Readable node name.")] = "hospital",
    data: Annotated[str, typer.Option(help="This hospital's records.")] = "records.csv",
    schema: Annotated[str, typer.Option(help="The consortium's schema file.")] = "schema.toml",
    listen: Annotated[str, typer.Option(help="TCP multiaddr to listen on.")] = (
        "/ip4/0.0.0.0/tcp/4001"
    ),
    neighbour: Annotated[list[str] | None, typer.Option(help="Neighbour multiaddr.")] = None,
) -> None:
    """Write a commented example config and a fresh identity key (mode 0600)."""
    from node.init import init_node

    try:
        config_path, peer_id = init_node(folder, name, data, schema, listen, neighbour or [])
    except FileExistsError as exc:
        raise _fail(str(exc)) from None
    console.print(f"wrote {config_path} and {folder / 'identity.key'} (mode 600)")
    console.print(f"peer id: [bold]{peer_id}[/bold]")
    console.print(f"neighbours dial you at: <your address>/tcp/<port>/p2p/{peer_id}")


@node_app.command("run")
def node_run(
    config: Annotated[Path, typer.Option("--config", "-c", help="The node's TOML config.")],
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: dotted.key=value.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No live progress line.")] = False,
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "WARNING",
) -> None:
    """Run one node until its last round, with a live progress line."""
    import trio

    from gossip.errors import GossipError
    from node.config import load_config
    from node.progress import RoundProgress
    from node.runner import NodeRunner

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = load_config(config, overrides)
        with RoundProgress(cfg.node.name, cfg.swarm.rounds, console, enabled=not quiet) as bar:
            runner = NodeRunner(cfg, on_round=bar.update)
            summary = trio.run(runner.run)
    except (NodeError, GossipError) as exc:
        raise _fail(str(exc)) from None
    final = summary["final"]
    if final:
        console.print(
            f"{cfg.node.name}: {summary['rounds']} rounds, merged validation accuracy "
            f"{final['merged']['accuracy']:.3f}; outputs in {cfg.node.output_dir}"
        )


@node_app.command("health")
def node_health(
    config: Annotated[Path, typer.Option("--config", "-c", help="The node's TOML config.")],
    max_age: Annotated[
        float | None,
        typer.Option(help="Also require progress (metrics.jsonl, peer.json) this many s old."),
    ] = None,
) -> None:
    """Exit 0 if the node of this config is alive here: its libp2p port accepts TCP (and, with
    --max-age, it made progress lately); else print why and exit 1. For container health."""
    from node.config import load_config
    from node.health import check_health

    try:
        cfg = load_config(config)
    except NodeError as exc:
        raise _fail(str(exc)) from None
    problems = check_health(cfg.node.listen, cfg.node.output_dir, max_age)
    for problem in problems:
        console.print(f"{cfg.node.name} unhealthy: {problem}", highlight=False)
    if problems:
        raise typer.Exit(1)
    console.print(f"{cfg.node.name} healthy", highlight=False)


@swarm_app.command("init")
def swarm_init(
    folder: Annotated[Path, typer.Argument(help="Folder for the swarm's node configs.")],
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 20,
    topology: Annotated[str, typer.Option(help="ring or full.")] = "ring",
    model: Annotated[str, typer.Option(help="logreg or mlp.")] = "mlp",
    ledger: Annotated[bool, typer.Option(help="A consortium chain (Anvil) in the folder.")] = False,
) -> None:
    """Configs and keys for the four heart-disease hospitals (natural split)."""
    from sim.swarm import init_swarm_scenario

    try:
        path = init_swarm_scenario(
            folder, rounds=rounds, topology=topology, model=model, ledger=ledger
        )
    except (ValueError, FileExistsError, NodeError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"wrote {path}; run it with: medswarm swarm up {folder}")


@swarm_app.command("up")
def swarm_up(
    folder: Annotated[Path, typer.Argument(help="A folder made by `medswarm swarm init`.")],
    baselines: Annotated[bool, typer.Option(help="Also train local-only and pooled.")] = True,
) -> None:
    """Start one process per node, show progress, then compare with the baselines."""
    from sim.swarm import run_swarm_folder

    _run_swarm(lambda: run_swarm_folder(folder, console, baselines))


@swarm_app.command("demo")
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
    from sim.docker_env import DockerError
    from sim.local_swarm import SwarmError

    try:
        run()
    except (SwarmError, NodeError, LedgerError, DockerError, FileExistsError, ValueError) as exc:
        raise _fail(str(exc)) from None


@sim_app.command("init")
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
        raise _fail(str(exc)) from None
    console.print(f"wrote {path}; run it with: medswarm sim run {path} --out runs/sim")


@sim_app.command("run")
def sim_run(
    scenario: Annotated[Path, typer.Argument(help="A scenario TOML (see `sim init`).")],
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/sim"),
    replace: Annotated[
        bool, typer.Option(help="Delete an earlier run in the run folder first.")
    ] = False,
    backend: Annotated[
        str | None,
        typer.Option(help="process, inproc or docker (default: the scenario's `backend`)."),
    ] = None,
) -> None:
    """Run a scenario (one run per seed) and write metrics, summary.json, plots and a report."""
    from ledger.errors import LedgerError
    from sim.docker_env import DockerError
    from sim.local_swarm import SwarmError
    from sim.run import run_scenario

    try:
        run_scenario(scenario, out, console, replace, backend)
    except (
        SwarmError,
        NodeError,
        LedgerError,
        DockerError,
        FileExistsError,
        ValueError,
    ) as exc:
        raise _fail(str(exc)) from None


@bench_app.command("transport")
def bench_transport(
    json_out: JsonOut = Path("bench-transport.json"),
    sizes: Annotated[str, typer.Option(help="Comma-separated MB.")] = "1,10,50",
    repeats: Annotated[int, typer.Option(help="Transfers per size and transport.")] = 5,
) -> None:
    """Move parameter sets between two processes over libp2p (Noise+yamux) and plain TCP."""
    from gossip.bench import run_transport_bench

    results = run_transport_bench([float(s) for s in sizes.split(",")], repeats, console)
    _write_json(json_out, results)


@bench_app.command("swarm")
def bench_swarm(
    json_out: JsonOut = Path("bench-swarm.json"),
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 20,
) -> None:
    """The heart-disease swarm: time per round, bytes, memory and accuracies."""
    from sim.local_swarm import run_swarm_bench

    _write_json(json_out, run_swarm_bench(rounds, console))


@bench_app.command("ledger")
def bench_ledger(json_out: JsonOut = Path("bench-ledger.json")) -> None:
    """Gas and throughput of the consortium contract."""
    from ledger.bench import run_ledger_bench

    run_ledger_bench(json_out)


@bench_app.command("contribution")
def bench_contribution(
    json_out: JsonOut = Path("bench-contribution.json"),
    rounds: Annotated[int, typer.Option(help="Scored rounds per neighbourhood size.")] = 3,
    exact_up_to: Annotated[
        int, typer.Option(help="Compare sampling with exact Shapley up to this many neighbours.")
    ] = 16,
) -> None:
    """Contribution scoring on heart-disease models: time, evaluations, sampling accuracy."""
    from node.contribution_bench import run_contribution_bench

    try:
        results = run_contribution_bench(console, rounds=rounds, exact_up_to=exact_up_to)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    _write_json(json_out, results)


@bench_app.command("sim")
def bench_sim(
    json_out: JsonOut = Path("bench-sim.json"),
    backend: Annotated[
        str, typer.Option(help="process, inproc, docker or all (process and inproc).")
    ] = "all",
    sizes: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated node counts (default: inproc 10,50,200; process 10,20; "
            "docker 4,12)."
        ),
    ] = None,
    rounds: Annotated[int, typer.Option(help="Gossip rounds per run.")] = 5,
    shipped: Annotated[
        bool, typer.Option(help="Also run sim/scenarios/breast-cancer.toml (process backend).")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds a run may take.")] = 1800,
) -> None:
    """The simulator on breast cancer: time per round and peak memory by node count, against
    server FedAvg on the same partitions; and the shipped breast-cancer scenario's targets.
    Docker: also the image build, container start time and memory per container."""
    from sim.bench import run_sim_bench
    from sim.docker_env import DockerError

    try:
        node_counts = [int(s) for s in sizes.split(",")] if sizes else None
        results = run_sim_bench(console, backend, node_counts, rounds, shipped, timeout)
    except (ValueError, DockerError) as exc:
        raise _fail(str(exc)) from None
    _write_json(json_out, results)
    failed = [r for r in [*results["runs"], results.get("breast_cancer", {})] if "error" in r]
    if failed:
        raise _fail(f"{len(failed)} run(s) failed; see {json_out}")


def _write_json(path: Path, results: Any) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    console.print(f"wrote {path}")
