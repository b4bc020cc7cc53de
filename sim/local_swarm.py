"""A local swarm: one `medswarm node run` process per node on 127.0.0.1.

The simulator drives nodes only through their public entry points: it writes node configs and
keys, starts the CLI, and reads the output folders (metrics.jsonl, summary.json).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from gossip.identity import create_key_file, peer_id_of
from ledger.backends import Chain
from node.init import render_config, with_settings
from node.metrics import read_records
from sim.consortium import (
    KEY_FILE,
    ConsortiumPlan,
    create_consortium,
    open_chain,
    settle,
)
from sim.errors import AlreadyExists, SimError
from sim.topology import matchings

REPO_ROOT = Path(__file__).resolve().parents[1]
HEART_DISEASE = REPO_ROOT / "data" / "heart-disease"
HEART_SITES = {
    "cleveland": "processed.cleveland.data",
    "hungarian": "processed.hungarian.data",
    "switzerland": "processed.switzerland.data",
    "va": "processed.va.data",
}


class SwarmError(SimError):
    """A swarm folder is unusable, or a node process failed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def topology_edges(n: int, topology: str) -> list[set[int]]:
    """Neighbour sets for n nodes: ring or full."""
    if topology == "ring":
        return [{(i - 1) % n, (i + 1) % n} - {i} for i in range(n)]
    if topology == "full":
        return [set(range(n)) - {i} for i in range(n)]
    raise ValueError(f"unknown topology {topology!r}: expected ring or full")


def rotation_settings(
    nbrs: Sequence[set[int]], names: Sequence[str], seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Per-node settings for a rotation of matchings over `nbrs`: each link's phase, listed in
    the neighbour order `init_swarm` writes (sorted), so both ends of a link agree on it."""
    phases = matchings(nbrs, seed)
    rotation = max(phases.values(), default=0) + 1
    return {
        name: {
            "swarm.rotation": rotation,
            "node.neighbour_phases": [phases[frozenset((i, j))] for j in sorted(nbrs[i])],
        }
        for i, name in enumerate(names)
    }


def init_swarm(
    folder: Path,
    sites: Mapping[str, Path],
    schema: Path,
    *,
    rounds: int,
    topology: str | Sequence[set[int]] = "ring",
    model: str = "mlp",
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    ledger: ConsortiumPlan | None = None,
    chain: Chain | None = None,
) -> list[Path]:
    """Write one config and identity per site; `extra` sets per-node config keys (dotted).
    With `ledger`, also a consortium whose members are these nodes, on `chain` (default: an
    Anvil whose state stays in the folder, for `swarm up` to start again)."""
    if (folder / "swarm.json").exists():
        raise AlreadyExists(f"{folder} already holds a swarm (swarm.json)")
    names = list(sites)
    edges = topology_edges(len(names), topology) if isinstance(topology, str) else topology
    ports = [free_port() for _ in names]
    peer_ids = []
    for name in names:
        node_dir = folder / "nodes" / name
        node_dir.mkdir(parents=True, exist_ok=True)
        peer_ids.append(peer_id_of(create_key_file(node_dir / "identity.key")))
    consortium = None
    if ledger is not None:
        members = dict(zip(names, peer_ids, strict=True))
        if chain is None:
            with open_chain(folder) as anvil:
                consortium = create_consortium(anvil, folder, members, ledger)
        else:
            consortium = create_consortium(chain, folder, members, ledger)
    configs = []
    for i, name in enumerate(names):
        node_dir = folder / "nodes" / name
        neighbours = [f"/ip4/127.0.0.1/tcp/{ports[j]}/p2p/{peer_ids[j]}" for j in sorted(edges[i])]
        text = render_config(
            name=name,
            key_file="identity.key",
            listen=f"/ip4/127.0.0.1/tcp/{ports[i]}",
            neighbours=neighbours,
            output_dir="out",
            data=str(sites[name].resolve()),
            schema=str(schema.resolve()),
            model=model,
            rounds=rounds,
            ledger_contract=consortium["contract"] if consortium else "",
            ledger_key_file=KEY_FILE if consortium else "",
        )
        (node_dir / "node.toml").write_text(with_settings(text, (extra or {}).get(name, {})))
        configs.append(node_dir / "node.toml")
    manifest = {
        "nodes": names,
        "topology": topology if isinstance(topology, str) else "custom",
        "rounds": rounds,
        "ledger": consortium,
    }
    (folder / "swarm.json").write_text(json.dumps(manifest, indent=1))
    return configs


def init_heart_disease_swarm(
    folder: Path,
    *,
    rounds: int = 20,
    topology: str = "ring",
    model: str = "mlp",
    ledger: ConsortiumPlan | None = None,
) -> list[Path]:
    if not HEART_DISEASE.is_dir():
        raise ValueError(f"heart-disease data not found at {HEART_DISEASE}")
    sites = {name: HEART_DISEASE / file for name, file in HEART_SITES.items()}
    return init_swarm(
        folder,
        sites,
        HEART_DISEASE / "schema.toml",
        rounds=rounds,
        topology=topology,
        model=model,
        ledger=ledger,
    )


def node_command(config: Path, overrides: Mapping[str, Any] = {}) -> list[str]:
    cmd = [sys.executable, "-m", "medswarm", "node", "run", "--config", str(config), "--quiet"]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    return cmd


def start_node(folder: Path, name: str, overrides: Mapping[str, Any] = {}) -> subprocess.Popen:
    """Start one node process; its output goes to nodes/<name>/node.log."""
    node_dir = folder / "nodes" / name
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(node_dir / "node.log", "ab") as log:  # the child keeps its own copy of the fd
        return subprocess.Popen(
            node_command(node_dir / "node.toml", overrides),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def load_manifest(folder: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((folder / "swarm.json").read_text()))
    except FileNotFoundError:
        raise SwarmError(
            f"{folder}: no swarm.json; create one with `medswarm swarm init`"
        ) from None


def run_processes(
    folder: Path, console: Console, timeout: float = 1800, chain_url: str | None = None
) -> float:
    """Start every node, show progress until all exit; return the wall-clock seconds.
    `chain_url`: where the consortium's chain listens this time (its port changes per run)."""
    manifest = load_manifest(folder)
    names, rounds = manifest["nodes"], manifest["rounds"]
    chain = {"ledger.chain": chain_url} if chain_url else {}
    began = time.perf_counter()
    procs = {n: start_node(folder, n, chain) for n in names}
    progress = Progress(
        TextColumn("{task.fields[name]:<12}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )
    tasks = {n: progress.add_task("", total=rounds, name=n, status="starting") for n in names}
    try:
        with progress:
            while any(p.poll() is None for p in procs.values()):
                if time.perf_counter() - began > timeout:
                    raise SwarmError(f"swarm did not finish within {timeout:.0f}s")
                for n in names:
                    records = read_records(folder / "nodes" / n / "out" / "metrics.jsonl")
                    if records:
                        last = records[-1]
                        status = f"merged acc {last['merged']['accuracy']:.3f}"
                        progress.update(tasks[n], completed=last["round"], status=status)
                time.sleep(0.3)
    finally:
        stop_processes(procs.values())
    failed = {n: p.returncode for n, p in procs.items() if p.returncode != 0}
    if failed:
        logs = "\n".join(
            f"--- {n} (exit {code}):\n" + tail(folder / "nodes" / n / "node.log")
            for n, code in failed.items()
        )
        raise SwarmError(f"node processes failed:\n{logs}")
    return time.perf_counter() - began


def stop_processes(procs: Collection[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of a log file, "" if there is none."""
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


def swarm_results(folder: Path, baselines: bool) -> dict[str, Any]:
    """Final swarm metrics per node, with local-only and pooled baselines on the same splits."""
    from node.baselines import Recipe, local_only, local_only_cross_site, pooled
    from node.config import load_config
    from node.dataset import load_schema, load_table

    manifest = load_manifest(folder)
    results: dict[str, Any] = {"nodes": {}}
    tables, cfg = {}, None
    for name in manifest["nodes"]:
        cfg = load_config(folder / "nodes" / name / "node.toml")
        summary = json.loads((cfg.node.output_dir / "summary.json").read_text())
        results["nodes"][name] = {
            "swarm": summary["final"]["merged"],
            "peak_rss_mb": summary["peak_rss_mb"],
        }
        tables[name] = load_table(cfg.data.path, load_schema(cfg.data.schema_file))
    if baselines and cfg is not None:
        recipe = Recipe(
            model=cfg.model.name,
            hidden=cfg.model.hidden,
            settings=cfg.training.settings(),
            rounds=cfg.swarm.rounds,
            val_fraction=cfg.data.validation_fraction,
            split_seed=cfg.data.split_seed,
            model_seed=cfg.model.init_seed,
        )
        baseline_fns = {
            "local_only": local_only,
            "local_cross_site": local_only_cross_site,
            "pooled": pooled,
        }
        for kind, fn in baseline_fns.items():
            for name, res in fn(tables, recipe).items():
                results["nodes"][name][kind] = res.to_dict()
    results["mean"] = {
        kind: {
            metric: _mean([r[kind][metric] for r in results["nodes"].values() if kind in r])
            for metric in ("accuracy", "auc")
        }
        for kind in ("swarm", "local_only", "local_cross_site", "pooled")
        if all(kind in r for r in results["nodes"].values())
    }
    return results


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


LABELS = {
    "local_only": "local",
    "local_cross_site": "local, all",
    "swarm": "swarm",
    "pooled": "pooled",
}


def results_table(results: dict[str, Any]) -> Table:
    table = Table(
        title="validation accuracy and AUC per hospital",
        box=box.SIMPLE_HEAD,
        caption="local: each hospital alone, on its own validation split. local, all: "
        "that model on every hospital's validation split (FLamby's protocol). swarm: the "
        "node's final merged model. pooled: one model on all hospitals' training rows.",
    )
    table.add_column("hospital", no_wrap=True)
    kinds = [k for k in LABELS if k in results["mean"]]
    for kind in kinds:
        table.add_column(f"{LABELS[kind]}\nacc   AUC", justify="right", no_wrap=True)
    rows = list(results["nodes"].items()) + [("mean", results["mean"])]
    for name, r in rows:
        cells = [f"{_fmt(r[k]['accuracy'])} {_fmt(r[k]['auc'])}" for k in kinds]
        table.add_row(name, *cells, end_section=name == rows[-2][0])
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def run_swarm(folder: Path, console: Console, baselines: bool = True) -> dict[str, Any]:
    manifest = load_manifest(folder)
    settled = None
    if manifest.get("ledger"):
        with open_chain(folder) as chain:  # closing saves the chain's state in the run folder
            wall = run_processes(folder, console, chain_url=chain.url)
            settled = settle(folder, chain, manifest)
    else:
        wall = run_processes(folder, console)
    results = swarm_results(folder, baselines)
    results["wall_seconds"] = wall
    if settled is not None:
        results["ledger"] = settled
    (folder / "results.json").write_text(json.dumps(results, indent=1))
    console.print(results_table(results))
    if settled is not None:
        console.print(rewards_table(results))
        verdict = "[green]passed[/green]" if settled["audit_ok"] else "[red]FAILED[/red]"
        console.print(f"ledger audit {verdict}; to repeat it: {settled['audit_command']}")
    console.print(f"swarm finished in {wall:.1f}s; results in {folder / 'results.json'}")
    return results


def rewards_table(results: dict[str, Any]) -> Table:
    ledger = results["ledger"]
    table = Table(
        title=f"contribution and reward per hospital (epochs {ledger['finalized_epochs']})",
        box=box.SIMPLE_HEAD,
        caption="contribution: the sum over finalized epochs of the median of the Shapley "
        "scores the other hospitals reported. reward: what the pool paid for it.",
    )
    for col in ("hospital", "contribution", "reward (ETH)", "swarm acc", "swarm AUC"):
        table.add_column(col, justify="left" if col == "hospital" else "right")
    for name, member in ledger["members"].items():
        swarm = results["nodes"].get(name, {}).get("swarm", {})
        table.add_row(
            name,
            f"{member['score']:.4f}",
            f"{member['reward_wei'] / 1e18:.4f}",
            _fmt(swarm.get("accuracy")),
            _fmt(swarm.get("auc")),
        )
    return table
