"""`medswarm bench sim`: how the simulator scales, and how the swarm compares with FedAvg.

Every measured run is a scenario written to a temporary folder and run by
`sim.run.run_scenario` in a fresh child process (`medswarm bench sim-one ...`), so each run's
peak memory (`ru_maxrss` of the child) is its own and not the peak of an earlier, larger run:

- inproc: all nodes are trio tasks of the child, so its peak RSS is the whole swarm's memory
  (plus the FedAvg baseline run after it, and the imports).
- process: one OS process per node; each node reports its own peak RSS in summary.json.
- docker: one container per node (`sim.docker_backend`); besides the nodes' own reports, each
  container's peak memory from its cgroup, and the time to create and start it. Before the
  runs the images are built with scripts/docker-image.sh: a rebuild from docker's layer cache
  when they exist (what a developer pays after a change), a first build when they do not.

Each run also trains the server-based FedAvg baseline on the same partitions (`sim.run`
does that after the swarm), which gives its accuracy and wall-clock beside the swarm's.
Finally the shipped breast-cancer scenario (20 nodes, process backend) is run as it is, to
check the targets: 200 inproc nodes in under 2 GiB, and on breast-cancer the swarm within
0.5 accuracy points of FedAvg at no more than its wall-clock.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from medswarm.bench.tables import bench_table
from node.dataset import load_schema, load_table
from node.metrics import read_records
from sim import partition
from sim.local_swarm import tail
from sim.scenario import BACKENDS

REPO_ROOT = Path(__file__).resolve().parents[2]
BREAST_CANCER = REPO_ROOT / "data" / "breast-cancer"
SHIPPED = REPO_ROOT / "sim" / "scenarios" / "breast-cancer.toml"
ALL = ("inproc", "process")  # `--backend all`: docker only when asked for (it needs an engine)
# ray: a local instance, whose actors take half a CPU each (the scenario's [ray] default).
DEFAULT_SIZES = {"inproc": [10, 50, 200], "process": [10, 20], "docker": [4, 12], "ray": [4]}
ALPHA = 0.3
MIN_ROWS = 2  # 569 rows over 200 nodes: at most 2 rows guaranteed per node
DEGREE = 4
SEED = 0
RUN_TIMEOUT = 1800.0  # seconds per run (a child process) before it is stopped
MEMORY_TARGET_MB = 2048.0  # "200 inproc nodes in under 2 GB", read as 2 GiB
MEMORY_TARGET_NODES = 200
ACCURACY_MARGIN = 0.005  # "within 0.5 points" of FedAvg's mean accuracy


def split_for(nodes: int, seed: int = SEED) -> str:
    """Dirichlet label skew if the data allows it for `nodes`, else quantity skew.

    `partition.dirichlet_label_skew` gives every node 2 rows of each class, so with 212
    malignant rows it stops at 106 nodes; quantity skew only needs `MIN_ROWS` per node.
    """
    schema = load_schema(BREAST_CANCER / "schema.toml")
    y = load_table(BREAST_CANCER / "breast-cancer.csv", schema).target
    try:
        partition.dirichlet_label_skew(y, nodes, ALPHA, seed, MIN_ROWS)
    except ValueError:
        partition.quantity_skew(len(y), nodes, ALPHA, seed, MIN_ROWS)  # raises if impossible
        return "quantity"
    return "dirichlet"


def scenario_text(name: str, backend: str, nodes: int, rounds: int, split: str) -> str:
    """A breast-cancer scenario with absolute data paths; FedAvg is the only baseline. Degree
    `DEGREE`, or every other node where there are fewer."""
    schema = json.dumps(str(BREAST_CANCER / "schema.toml"))
    data = json.dumps(str(BREAST_CANCER / "breast-cancer.csv"))
    return f"""\
# Written by `medswarm bench sim`.
name = "{name}"
seeds = [{SEED}]
backend = "{backend}"
rounds = {rounds}

[data]
schema = {schema}
file = {data}
split = "{split}"
nodes = {nodes}
alpha = {ALPHA}
min_rows = {MIN_ROWS}
validation_fraction = 0.25

[topology]
kind = "k_regular"
degree = {min(DEGREE, nodes - 1)}

[model]
name = "mlp"
hidden = [32]

[training]
epochs = 1
batch_size = 32
lr = 0.05
optimizer = "sgd"

[swarm]
merge = "metropolis"

[chain]
backend = "none"

[baselines]
local_only = false
centralized = false
fedavg = true
"""


# -- one run, in a child process --------------------------------------------------------------


def run_one(scenario: Path, run_dir: Path, out: Path) -> None:
    """Run `scenario` into `run_dir` in this process and write what the parent cannot see
    (this process's peak RSS and run time) to `out`. Meant for a fresh child process."""
    from sim.run import run_scenario

    began = time.perf_counter()
    run_scenario(scenario, run_dir, Console(quiet=True))
    result = {
        "run_seconds": time.perf_counter() - began,
        # Linux reports kilobytes.
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    out.write_text(json.dumps(result))


def _child(scenario: Path, run_dir: Path, work: Path, timeout: float) -> dict[str, Any]:
    """Run one scenario in a child process; its numbers, or {"error": ...}."""
    out, log = work / f"{run_dir.name}.json", work / f"{run_dir.name}.log"
    cmd = [
        sys.executable,
        "-m",
        "medswarm",
        "bench",
        "sim-one",
        str(scenario),
        str(run_dir),
        str(out),
    ]
    began = time.perf_counter()
    with log.open("wb") as sink:
        child = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGINT first: the run's `finally` stops its node processes.
            os.killpg(child.pid, signal.SIGINT)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            return {"error": f"stopped after {timeout:.0f}s", "log": tail(log, 20)}
    elapsed = time.perf_counter() - began
    if code != 0 or not out.exists():
        return {"error": f"exit code {code} after {elapsed:.0f}s", "log": tail(log, 20)}
    return {**json.loads(out.read_text()), "child_seconds": elapsed}


# -- reading a run folder ---------------------------------------------------------------------


def measure(run_dir: Path) -> dict[str, Any]:
    """Swarm and FedAvg numbers of a finished single-seed run folder."""
    summary = json.loads((run_dir / "summary.json").read_text())
    rounds = int(summary["rounds"])
    first_round: list[float] = []  # when each node finished round 1
    reached = expected = 0
    round_seconds = []
    for name in summary["nodes"]:
        for r in read_records(run_dir / "nodes" / name / "out" / "metrics.jsonl"):
            if r["round"] == 1:
                first_round.append(r["time"])
            reached += len(r["neighbours_reached"])
            expected += r["neighbours_total"]
            if r["round"] > 1:
                round_seconds.append(r["round_seconds"])
    peaks = [v["peak_rss_mb"] for v in summary["nodes"].values()]
    fedavg = summary["baselines"].get("fedavg")
    return {
        "nodes": len(summary["nodes"]),
        "rounds": rounds,
        "swarm_wall_seconds": summary["wall_seconds"],
        # Swarm-wide pace once every node is up: round 1 also holds start-up and scaling.
        "round_wall_seconds": pace / (rounds - 1)
        if (pace := summary.get("rounds_wall_seconds")) is not None
        else None,
        # Each node's own time per round (rounds 2 on), the median over nodes and rounds.
        "node_round_seconds_median": float(np.median(round_seconds)) if round_seconds else None,
        # How far apart the nodes ran: the last node finished round 1 this long after the first.
        "round_1_spread_seconds": max(first_round) - min(first_round) if first_round else None,
        # Share of the neighbour models that arrived in time, over all nodes and rounds: the
        # swarm gossips only if this is near 1.
        "links_reached": reached / expected if expected else None,
        "node_peak_rss_mb": {
            "max": float(np.max(peaks)),
            "mean": float(np.mean(peaks)),
            "sum": float(np.sum(peaks)),
        },
        "swarm_accuracy": summary["mean"]["accuracy"],
        "swarm_auc": summary["mean"]["auc"],
        "fedavg_accuracy": fedavg["mean_accuracy"] if fedavg else None,
        "fedavg_auc": fedavg["mean_auc"] if fedavg else None,
        "fedavg_wall_seconds": fedavg["wall_seconds"] if fedavg else None,
        "fedavg_round_seconds": float(np.mean([h["seconds"] for h in fedavg["history"]]))
        if fedavg and fedavg["history"]
        else None,
        # Rounds 2 on (round 1 holds start-up and torch's warm-up), swarm and FedAvg alike.
        "swarm_rounds_wall_seconds": summary.get("rounds_wall_seconds"),
        "fedavg_network": {
            k: network[k]
            for k in ("mean_accuracy", "mean_auc", "wall_seconds", "rounds_wall_seconds")
        }
        if (network := summary["baselines"].get("fedavg_network"))
        else None,
    }


# -- the bench --------------------------------------------------------------------------------


def run_sim_bench(
    console: Console,
    backend: str = "all",
    sizes: Sequence[int] | None = None,
    rounds: int = 5,
    shipped: bool = True,
    timeout: float = RUN_TIMEOUT,
) -> dict[str, Any]:
    """Run the scaling runs and the shipped breast-cancer scenario; print tables, return all."""
    if backend not in (*BACKENDS, "all"):
        raise ValueError(f"unknown backend {backend!r}: expected {' | '.join(BACKENDS)} | all")
    if rounds < 2:
        raise ValueError("rounds must be at least 2 to time a round")
    if sizes is not None and any(n < 2 for n in sizes):
        raise ValueError(f"a swarm needs at least 2 nodes, got sizes {list(sizes)}")
    backends = ALL if backend == "all" else (backend,)
    began = time.perf_counter()
    results: dict[str, Any] = {
        "settings": {
            "data": "breast-cancer (569 rows)",
            "alpha": ALPHA,
            "min_rows": MIN_ROWS,
            "topology": f"k_regular, degree {DEGREE}",
            "model": "mlp [32]",
            "rounds": rounds,
            "seed": SEED,
            "chain": "none",
            "baselines": "fedavg only",
            "split_rule": "dirichlet label skew where every node can get 2 rows of each class "
            "(up to 106 nodes), quantity skew beyond",
        },
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="medswarm-bench-sim-") as tmp:
        work = Path(tmp)
        if "docker" in backends:
            results["docker_images"] = image_build(work / "docker-build.log", console)
        for kind in backends:
            for nodes in sizes if sizes is not None else DEFAULT_SIZES[kind]:
                split = split_for(nodes)
                name = f"bench-{kind}-{nodes}"
                path = work / f"{name}.toml"
                path.write_text(scenario_text(name, kind, nodes, rounds, split))
                console.print(f"{kind}, {nodes} nodes ({split} split), {rounds} rounds ...")
                row = {"backend": kind, "nodes": nodes, "split": split, "rounds": rounds}
                row |= _run(path, work / name, work, timeout, console)
                results["runs"].append(row)
        if shipped and backend in ("process", "all"):
            console.print(f"the shipped scenario {SHIPPED.name} ...")
            row = {"scenario": str(SHIPPED.relative_to(REPO_ROOT))}
            row |= _run(SHIPPED, work / "shipped", work, timeout, console)
            results["breast_cancer"] = row
    results["targets"] = targets(results)
    results["total_seconds"] = time.perf_counter() - began
    console.print(runs_table(results))
    if "docker" in backends:
        console.print(docker_table(results))
    if "breast_cancer" in results:
        console.print(shipped_table(results["breast_cancer"]))
    console.print(targets_table(results["targets"]))
    console.print(f"bench took {results['total_seconds']:.0f}s")
    return results


def _run(
    scenario: Path, run_dir: Path, work: Path, timeout: float, console: Console
) -> dict[str, Any]:
    child = _child(scenario, run_dir, work, timeout)
    if "error" in child:
        console.print(f"  [red]failed:[/red] {child['error']}\n{child['log']}", highlight=False)
        return child
    row = {**measure(run_dir), **child}
    if (run_dir / "docker.json").exists():
        row["docker"] = docker_facts(run_dir)
    pace = _f(row["round_wall_seconds"], ".2f")
    links = row["links_reached"]
    console.print(
        f"  done in {child['child_seconds']:.0f}s: {pace}s per round, "
        f"{'-' if links is None else f'{links:.0%}'} of neighbour models arrived, peak RSS "
        f"{child['process_peak_rss_mb']:.0f} MB (the run's own process), "
        f"{row['node_peak_rss_mb']['max']:.0f} MB (max over the nodes' reports)",
        highlight=False,
    )
    return row


def image_build(log: Path, console: Console) -> dict[str, Any]:
    """Time scripts/docker-image.sh: a rebuild from the layer cache if the images exist."""
    from sim.docker_env import build_images, chain_image, engine, node_image

    client = engine()
    existed = all(_has(client, name) for name in (node_image(), chain_image()))
    kind = "rebuild from docker's layer cache" if existed else "first build (images missing)"
    console.print(f"docker images: {kind} ...")
    seconds = build_images(log)
    sizes = {
        name: client.images.get(name).attrs["Size"] / 1e6 for name in (node_image(), chain_image())
    }
    console.print(f"  done in {seconds:.1f}s", highlight=False)
    return {"kind": kind, "seconds": seconds, "image_mb": sizes}


def _has(client: Any, name: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(name)
    except ImageNotFound:
        return False
    return True


def docker_facts(run_dir: Path) -> dict[str, Any]:
    """From a docker run's docker.json: container start time and memory per node."""
    record = json.loads((run_dir / "docker.json").read_text())
    starts = [s for v in record["nodes"].values() for s in v["start_seconds"][:1]]
    memory = [v["memory_peak_mb"] for v in record["nodes"].values() if v["memory_peak_mb"]]
    return {
        # `docker create` + `docker start` of a node's container, until the engine says started.
        "start_seconds": {"mean": float(np.mean(starts)), "max": float(np.max(starts))},
        # The container's memory cgroup at its peak (polled): the node, its page cache, all.
        "memory_peak_mb": {"mean": float(np.mean(memory)), "max": float(np.max(memory))}
        if memory
        else None,
    }


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Whether each target of the issue is met by these runs (None: not measured)."""
    out: dict[str, Any] = {}
    big = [
        r
        for r in results["runs"]
        if r["backend"] == "inproc" and r["nodes"] == MEMORY_TARGET_NODES and "error" not in r
    ]
    out["inproc_200_nodes_under_2gib"] = {
        "target_mb": MEMORY_TARGET_MB,
        "measured_mb": big[0]["process_peak_rss_mb"] if big else None,
        "met": big[0]["process_peak_rss_mb"] < MEMORY_TARGET_MB if big else None,
        "note": "peak RSS of the one process that ran all 200 nodes and then the FedAvg baseline"
        if big
        else "200 inproc nodes were not run or failed",
        # Memory alone: a swarm whose nodes missed most neighbour models did not really gossip.
        "links_reached": big[0]["links_reached"] if big else None,
    }
    bc: dict[str, Any] = results.get("breast_cancer") or {}
    if not bc or "error" in bc:
        why = "the breast-cancer scenario was not run" if not bc else bc["error"]
        out["breast_cancer_accuracy_within_0.5_points"] = {"met": None, "note": why}
        out["breast_cancer_wall_clock_at_most_fedavg"] = {"met": None, "note": why}
        return out
    gap = bc["fedavg_accuracy"] - bc["swarm_accuracy"]
    out["breast_cancer_accuracy_within_0.5_points"] = {
        "swarm": bc["swarm_accuracy"],
        "fedavg": bc["fedavg_accuracy"],
        "fedavg_minus_swarm_points": 100 * gap,
        "met": gap <= ACCURACY_MARGIN,
    }
    network = bc.get("fedavg_network")
    if network is None:
        out["breast_cancer_wall_clock_at_most_fedavg"] = {
            "met": None,
            "note": "the scenario did not run FedAvg over the network (baselines.fedavg_network)",
        }
        return out
    out["breast_cancer_wall_clock_at_most_fedavg"] = {
        "swarm_rounds_seconds": bc["swarm_rounds_wall_seconds"],
        "fedavg_rounds_seconds": network["rounds_wall_seconds"],
        "met": bc["swarm_rounds_wall_seconds"] <= network["rounds_wall_seconds"],
        "note": "rounds 2 to the last, both as one OS process per hospital (FedAvg: plus its "
        "server) over libp2p on this machine; round 1 holds start-up and torch's warm-up",
        "swarm_whole_run_seconds": bc["swarm_wall_seconds"],
        "fedavg_whole_run_seconds": network["wall_seconds"],
        "fedavg_in_one_process_seconds": bc["fedavg_wall_seconds"],
    }
    return out


def _f(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def runs_table(results: dict[str, Any]) -> Table:
    table = bench_table(
        f"simulator scaling: breast cancer, {results['settings']['rounds']} rounds",
        ("backend", "nodes", "split", "s/round", "node s/round", "links", "swarm wall s",
         "peak RSS MB", "swarm acc", "FedAvg acc", "FedAvg wall s", "run s"),
        caption="s/round: (last node's time for the last round - for round 1) / (rounds - 1); "
        "node s/round: the median node's own round time. links: share of neighbour models that "
        "arrived in time. peak RSS: inproc, the one process holding every node (and then "
        "FedAvg); process, max and sum of the nodes' own peaks. run s: the whole run, with "
        "set-up, baselines and report.",
        left=("backend", "split"),
    )  # fmt: skip
    for r in results["runs"]:
        if "error" in r:
            table.add_row(r["backend"], str(r["nodes"]), r["split"], f"[red]{r['error']}[/red]")
            continue
        peak = (
            f"{r['process_peak_rss_mb']:.0f}"
            if r["backend"] == "inproc"
            else f"{r['node_peak_rss_mb']['max']:.0f} max, {r['node_peak_rss_mb']['sum']:.0f} sum"
        )
        links = r["links_reached"]
        table.add_row(
            r["backend"],
            str(r["nodes"]),
            r["split"],
            _f(r["round_wall_seconds"], ".2f"),
            _f(r["node_round_seconds_median"], ".2f"),
            "-" if links is None else f"{links:.0%}",
            _f(r["swarm_wall_seconds"], ".1f"),
            peak,
            _f(r["swarm_accuracy"]),
            _f(r["fedavg_accuracy"]),
            _f(r["fedavg_wall_seconds"], ".2f"),
            _f(r["child_seconds"], ".0f"),
        )
    return table


def docker_table(results: dict[str, Any]) -> Table:
    images = results.get("docker_images", {})
    table = bench_table(
        "docker backend",
        ("nodes", "start s mean", "start s max", "memory MB mean", "memory MB max",
         "node RSS MB max", "s/round"),
        caption=f"images: {images.get('kind', '-')} in {_f(images.get('seconds'), '.1f')}s "
        "(scripts/docker-image.sh). start: docker create + start of one node's container. "
        "memory: each container's memory cgroup at its peak; node RSS: the node's own report.",
    )  # fmt: skip
    for r in results["runs"]:
        if r["backend"] != "docker" or "error" in r:
            continue
        d, memory = r["docker"], r["docker"]["memory_peak_mb"] or {}
        table.add_row(
            str(r["nodes"]),
            _f(d["start_seconds"]["mean"], ".2f"),
            _f(d["start_seconds"]["max"], ".2f"),
            _f(memory.get("mean"), ".0f"),
            _f(memory.get("max"), ".0f"),
            _f(r["node_peak_rss_mb"]["max"], ".0f"),
            _f(r["round_wall_seconds"], ".2f"),
        )
    return table


def shipped_table(bc: dict[str, Any]) -> Table:
    table = bench_table(
        f"{bc['scenario']} as shipped (process backend)",
        ("", "mean accuracy", "mean AUC", "whole run s", "rounds 2 on, s"),
    )
    if "error" in bc:
        table.add_row("swarm", f"[red]{bc['error']}[/red]")
        return table
    rows = [
        ("swarm", bc["swarm_accuracy"], bc["swarm_auc"], bc["swarm_wall_seconds"],
         bc["swarm_rounds_wall_seconds"]),
        ("FedAvg, one process", bc["fedavg_accuracy"], bc["fedavg_auc"],
         bc["fedavg_wall_seconds"], None),
    ]  # fmt: skip
    if network := bc.get("fedavg_network"):
        rows.append(
            ("FedAvg over libp2p", network["mean_accuracy"], network["mean_auc"],
             network["wall_seconds"], network["rounds_wall_seconds"])
        )  # fmt: skip
    for label, acc, auc, whole, rounds in rows:
        table.add_row(label, _f(acc), _f(auc), _f(whole, ".1f"), _f(rounds, ".1f"))
    return table


def targets_table(found: dict[str, Any]) -> Table:
    columns = ("target", "measured", "met")
    table = bench_table("targets", columns, left=columns)
    mem = found["inproc_200_nodes_under_2gib"]
    acc = found["breast_cancer_accuracy_within_0.5_points"]
    wall = found["breast_cancer_wall_clock_at_most_fedavg"]
    links = mem.get("links_reached")
    table.add_row(
        "200 inproc nodes under 2 GiB peak RSS",
        f"{_f(mem['measured_mb'], '.0f')} MB"
        + ("" if links is None else f" ({links:.0%} of neighbour models arrived)"),
        _met(mem),
    )
    gap = acc.get("fedavg_minus_swarm_points")
    table.add_row(
        "breast-cancer: swarm within 0.5 points of FedAvg",
        f"swarm {_f(acc.get('swarm'))}, FedAvg {_f(acc.get('fedavg'))} "
        f"(FedAvg ahead by {_f(gap, '.2f')} points)",
        _met(acc),
    )
    table.add_row(
        "breast-cancer: swarm wall-clock at most FedAvg's (rounds 2 on)",
        f"swarm {_f(wall.get('swarm_rounds_seconds'), '.1f')}s, "
        f"FedAvg over libp2p {_f(wall.get('fedavg_rounds_seconds'), '.1f')}s",
        _met(wall),
    )
    return table


def _met(target: dict[str, Any]) -> str:
    met = target["met"]
    return "not measured" if met is None else "[green]yes[/green]" if met else "[red]no[/red]"
