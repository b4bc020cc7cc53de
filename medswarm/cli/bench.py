"""`medswarm bench ...`: benchmarks that print numbers and write JSON."""

from pathlib import Path
from typing import Annotated

import typer

from medswarm.cli.common import JsonOut, console, fail, write_json

app = typer.Typer(help="Benchmarks: print numbers and write JSON.", no_args_is_help=True)


@app.command("transport")
def bench_transport(
    json_out: JsonOut = Path("bench-transport.json"),
    sizes: Annotated[str, typer.Option(help="Comma-separated MB.")] = "1,10,50",
    repeats: Annotated[int, typer.Option(help="Transfers per size and transport.")] = 5,
) -> None:
    """Move parameter sets between two processes over libp2p (Noise+yamux) and plain TCP."""
    from medswarm.bench.transport import run_transport_bench

    results = run_transport_bench([float(s) for s in sizes.split(",")], repeats, console)
    write_json(json_out, results)


@app.command("transport-server", hidden=True)
def bench_transport_server(
    sizes: Annotated[list[float], typer.Argument(help="Parameter set sizes in MB.")],
) -> None:
    """The server process of `bench transport`: serves one parameter set per size until its
    stdin closes."""
    from medswarm.bench.transport import serve_parameter_sets

    serve_parameter_sets(sizes)


@app.command("swarm")
def bench_swarm(
    json_out: JsonOut = Path("bench-swarm.json"),
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 20,
) -> None:
    """The heart-disease swarm: time per round, bytes, memory and accuracies."""
    from medswarm.bench.swarm import run_swarm_bench

    write_json(json_out, run_swarm_bench(rounds, console))


@app.command("ledger")
def bench_ledger(json_out: JsonOut = Path("bench-ledger.json")) -> None:
    """Gas and throughput of the consortium contract."""
    from medswarm.bench.ledger import run_ledger_bench

    run_ledger_bench(json_out)


@app.command("contribution")
def bench_contribution(
    json_out: JsonOut = Path("bench-contribution.json"),
    rounds: Annotated[int, typer.Option(help="Scored rounds per neighbourhood size.")] = 3,
    exact_up_to: Annotated[
        int, typer.Option(help="Compare sampling with exact Shapley up to this many neighbours.")
    ] = 16,
) -> None:
    """Contribution scoring on heart-disease models: time, evaluations, sampling accuracy."""
    from medswarm.bench.contribution import run_contribution_bench

    try:
        results = run_contribution_bench(console, rounds=rounds, exact_up_to=exact_up_to)
    except ValueError as exc:
        raise fail(str(exc)) from None
    write_json(json_out, results)


@app.command("sim")
def bench_sim(
    json_out: JsonOut = Path("bench-sim.json"),
    backend: Annotated[
        str, typer.Option(help="process, inproc, docker, ray or all (process and inproc).")
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
    from medswarm.bench.sim import run_sim_bench
    from sim.docker_env import DockerError

    try:
        node_counts = [int(s) for s in sizes.split(",")] if sizes else None
        results = run_sim_bench(console, backend, node_counts, rounds, shipped, timeout)
    except (ValueError, DockerError) as exc:
        raise fail(str(exc)) from None
    write_json(json_out, results)
    failed = [r for r in [*results["runs"], results.get("breast_cancer", {})] if "error" in r]
    if failed:
        raise fail(f"{len(failed)} run(s) failed; see {json_out}")


@app.command("scale")
def bench_scale(
    json_out: JsonOut = Path("bench-scale.json"),
    workloads: Annotated[
        str, typer.Option(help="Comma-separated: 20 (sites, 200,000 x 64), 1000 (nodes).")
    ] = "20,1000",
    backend: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated backends for every workload (default: 20 sites on inproc "
            "and process, 1,000 nodes on inproc)."
        ),
    ] = None,
    topology: Annotated[
        str,
        typer.Option(help="Comma-separated graphs for 20 sites: full, k_regular (degree 4)."),
    ] = "full,k_regular",
    rounds: Annotated[
        int | None, typer.Option(help="Rounds per run (default: 20 sites 20, 1,000 nodes 5).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds a run may take.")] = 1800,
    keep: Annotated[
        Path | None, typer.Option(help="Keep the run folders (scenarios, nodes, logs) here.")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="inproc: the processes the nodes share (scenario workers; default 2)."
        ),
    ] = 2,
) -> None:
    """The simulator comparison workload (synthetic 200,000 x 64, 20 sites, Dirichlet 0.3,
    MLP 64-64, 20 rounds, one held-out test set) and 1,000 nodes: whole-run and per-round
    wall-clock, peak memory over all processes, test accuracy per round beside FedAvg's,
    bytes per node per round, neighbour models arrived; and the issue's targets."""
    from medswarm.bench.scale import run_scale_bench, workloads_named

    def names(text: str | None) -> list[str] | None:
        return [s.strip() for s in text.split(",") if s.strip()] if text else None

    try:
        if rounds is not None and rounds < 2:
            raise ValueError("--rounds must be at least 2 to time rounds 2..N")
        chosen = workloads_named(names(workloads) or [], rounds)
        results = run_scale_bench(
            console, chosen, names(backend), names(topology), timeout, keep, workers
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    write_json(json_out, results)
    failed = [r for r in results["runs"] if "error" in r]
    if failed:
        raise fail(f"{len(failed)} run(s) failed; see {json_out}")


@app.command("robustness")
def bench_robustness(
    json_out: JsonOut = Path("bench-robustness.json"),
    rounds: Annotated[
        int, typer.Option(help="Rounds per run (the breast-cancer scenario's 40).")
    ] = 40,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds (cells: mean over them).")] = (
        "0,1,2,3,4"
    ),
    attacks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated attacks (default: label_flip, noise, sign_flip, alie, "
            "ipm, colluding; also free_rider, a replaying free rider, as a control)."
        ),
    ] = None,  # fmt: skip
    rules: Annotated[
        str | None, typer.Option(help="Comma-separated merge rules (default: all).")
    ] = None,
    fractions: Annotated[
        str, typer.Option(help="Comma-separated Byzantine fractions of the 20 nodes.")
    ] = "0.1,0.2",
    workers: Annotated[
        int, typer.Option(min=1, help="inproc: the processes the nodes share (default 2).")
    ] = 2,
    keep: Annotated[
        Path | None, typer.Option(help="Keep the run folders (scenarios, nodes, logs) here.")
    ] = None,
    test_fraction: Annotated[
        float,
        typer.Option(
            help="Hold out this share of the records as a common test set and score every "
            "node's final model on it (default 0: each node on its own validation split)."
        ),
    ] = 0.0,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Run every run again, though an earlier, stopped or failed bench finished some "
            "(they are kept in OUT's .runs.jsonl until a bench with no failed run is written).",
        ),
    ] = False,
) -> None:
    """The attack x defence table: the breast-cancer swarm (20 nodes, 4-regular) under every
    attack with 10% and 20% Byzantine nodes, for every merge rule, against each rule's clean
    run; the recommended rule; a heat map and report beside the JSON (.png, .md, .html).
    Stopped part way, it resumes when started again with the same settings."""
    from medswarm.bench.journal import RunJournal
    from medswarm.bench.robustness import SEEDS, run_robustness_bench, write_report

    def names(text: str | None) -> list[str] | None:
        return [s.strip() for s in text.split(",") if s.strip()] if text else None

    try:
        chosen_seeds = [int(s) for s in names(seeds) or []] or list(SEEDS)
        chosen_fractions = [float(f) for f in names(fractions) or []]
        journal = RunJournal(json_out.with_suffix(".runs.jsonl"), fresh=fresh)
        results = run_robustness_bench(
            console, rounds, chosen_seeds, names(attacks), names(rules), chosen_fractions,
            workers, keep, test_fraction=test_fraction, journal=journal,
        )  # fmt: skip
    except ValueError as exc:
        raise fail(str(exc)) from None
    write_json(json_out, results)
    for path in write_report(results, json_out):
        console.print(f"wrote {path}")
    if results["errors"]:
        raise fail(
            f"{len(results['errors'])} run(s) failed; see {json_out}. The same command runs "
            f"only those again (the finished ones are kept in {journal.path})."
        )
    journal.remove()


@app.command("sim-one", hidden=True)
def bench_sim_one(
    scenario: Annotated[Path, typer.Argument(help="The scenario to run.")],
    run_dir: Annotated[Path, typer.Argument(help="Its run folder.")],
    out_json: Annotated[Path, typer.Argument(help="Where this process's peak RSS and time go.")],
) -> None:
    """One run of `bench sim`, in a fresh process so its peak memory is its own."""
    from medswarm.bench.sim import run_one

    run_one(scenario, run_dir, out_json)


@app.command("privacy")
def bench_privacy(
    json_out: JsonOut = Path("bench-privacy.json"),
    epsilons: Annotated[
        str, typer.Option(help="Comma-separated epsilons; none = DP-SGD off.")
    ] = "none,1,3,8",
    neighbours: Annotated[
        str, typer.Option(help="Comma-separated neighbour counts for secure aggregation.")
    ] = "4,8,16",
    rounds: Annotated[
        int | None, typer.Option(help="Rounds of the DP runs (default: the scenario's).")
    ] = None,
    secure_rounds: Annotated[int, typer.Option(help="Rounds of each secure-aggregation run.")] = 30,
    repeats: Annotated[int, typer.Option(help="Runs of each secure-aggregation setting.")] = 2,
) -> None:
    """Differential privacy (accuracy, AUC, membership-inference AUC, training time by epsilon)
    and secure aggregation (error, round time and bytes by neighbour count)."""
    from medswarm.bench.privacy import run_privacy_bench

    try:
        eps = [None if e.strip() == "none" else float(e) for e in epsilons.split(",") if e]
        counts = [int(k) for k in neighbours.split(",") if k]
    except ValueError as exc:
        raise fail(f"--epsilons / --neighbours: {exc}") from None
    write_json(json_out, run_privacy_bench(console, eps, counts, rounds, secure_rounds, repeats))


@app.command("analytics")
def bench_analytics(
    json_out: JsonOut = Path("bench-analytics.json"),
    sites: Annotated[str, typer.Option(help="Comma-separated site counts (synthetic).")] = "10,50",
    rows_per_site: Annotated[int, typer.Option(help="Synthetic rows per site (mean).")] = 400,
    backend: Annotated[str, typer.Option(help="The simulator backend: inproc or process.")] = (
        "inproc"
    ),
    workers: Annotated[int, typer.Option(min=1, help="inproc: processes the nodes share.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data.")] = 0,
) -> None:
    """Federated GLMs and statistics against statsmodels and pandas on the pooled records:
    coefficient and SE differences, iterations, time and bytes per node."""
    from medswarm.bench.analytics import run_analytics_bench

    counts = [int(s) for s in sites.split(",") if s.strip()]
    write_json(
        json_out, run_analytics_bench(console, counts, rows_per_site, backend, workers, seed)
    )
