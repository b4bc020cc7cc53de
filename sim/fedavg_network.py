"""Server-based FedAvg deployed as it would really run: one server process and one client process
per site, over the nodes' libp2p stack on 127.0.0.1, so its wall-clock compares fairly with the
swarm's. `node.baselines.fedavg` computes the same model in one process with no network.

Pull only, like the nodes' exchange: each process publishes snapshots, the other fetches them
(a fetch long-polls until the round is published).

    client "stats" 0    `local_stats` of its training rows
    server "scaler" 0   their sum: the pooled sufficient statistics
    server "global" r   the global model of round r, r = 1 .. R + 1
    client "params" r   global r after one round of local training, r = 1 .. R

The server averages in the order of the sites, as the in-process baseline does, so both give the
same model. This is the reference: a client that fails or never answers fails the run; the
server never averages without it.

    medswarm sim fedavg-process server|client CONFIG_JSON   (configs: `run_fedavg_network`)
"""

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import multiaddr
import numpy as np
import torch
import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import PeerInfo

from gossip import wire
from gossip.errors import GossipError, PeerMessageError, PeerUnavailable
from gossip.exchange import MAX_SERVER_WAIT, Fetched, ParamExchange, SnapshotStore
from gossip.host import build_host, ensure_connected, parse_peer_addr
from gossip.identity import create_key_file, load_key_file, peer_id_of
from node.baselines import (
    Recipe,
    fedavg_average,
    fedavg_evaluate,
    fedavg_local_update,
    fedavg_start,
    pooled_scaler,
    scored_rows,
    site_stats,
)
from node.dataset import load_schema, load_table, load_test_set, split_validation
from node.errors import NodeError
from node.offload import Offload
from sim.errors import AlreadyExists, SimError

log = logging.getLogger(__name__)

CONNECT_SECONDS = 5.0
IO_SECONDS = 30.0
LINGER_SECONDS = 30.0  # the server serves the final model until every client has hung up
RETRY_PAUSE = 0.2


class FedAvgError(SimError):
    """A peer failed, sent something invalid or never answered: the run cannot be exact."""


# -- the orchestrator ------------------------------------------------------------------------


def run_fedavg_network(
    sites: Mapping[str, Path],
    schema: Path,
    recipe: Recipe,
    folder: Path,
    test: Path | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Run FedAvg as processes; `folder` gets their configs, key files, logs and results.
    Each client scores the final model on its validation split, or on the common `test` set
    when the recipe holds none out.

    Raises RuntimeError naming the process (server, or client <site>) that failed or was still
    running at `timeout`, with the tail of its log. Every process is stopped on return.
    """
    # Imported here: local_swarm pulls in web3, which the server and clients never need.
    from sim.local_swarm import free_port, stop_processes, tail

    if not sites:
        raise ValueError("no sites given")
    folder = folder.resolve()
    if (folder / "server").exists():
        raise AlreadyExists(f"{folder} already holds a FedAvg run")
    dirs = {"server": folder / "server"} | {f"client {s}": folder / "clients" / s for s in sites}
    ports = {label: free_port() for label in dirs}
    peer_ids = {label: peer_id_of(create_key_file(d / "identity.key")) for label, d in dirs.items()}
    addrs = {label: f"/ip4/127.0.0.1/tcp/{ports[label]}/p2p/{peer_ids[label]}" for label in dirs}
    configs: dict[str, dict[str, Any]] = {
        "server": {
            "clients": {s: addrs[f"client {s}"] for s in sites},  # in averaging order
            "n_features": len(load_schema(schema).feature_columns()),
        }
    }
    for site, data in sites.items():
        configs[f"client {site}"] = {
            "site": site,
            "server": addrs["server"],
            "data": str(data.resolve()),
            "schema": str(schema.resolve()),
            "test": None if test is None else str(test.resolve()),
        }
    deadlines = {
        "connect_seconds": CONNECT_SECONDS,
        "io_seconds": IO_SECONDS,
        "linger_seconds": LINGER_SECONDS,
    }
    for label, d in dirs.items():
        # How long one fetch may wait. A stuck client is named by the server, which knows who
        # is late: the clients, waiting on the server, give up later, and the run later still.
        wait = timeout / 3 if label == "server" else 2 * timeout / 3
        configs[label] |= {
            "recipe": dataclasses.asdict(recipe),
            "deadlines": deadlines | {"wait_seconds": wait},
            "key_file": str(d / "identity.key"),  # the path only: keys never leave their file
            "listen": f"/ip4/127.0.0.1/tcp/{ports[label]}",
            "result": str(d / "result.json"),
        }
        (d / "config.json").write_text(json.dumps(configs[label], indent=1))

    procs: dict[str, subprocess.Popen[bytes]] = {}

    def failure(heading: str, labels: list[str]) -> RuntimeError:
        logs = "\n".join(
            f"--- {label} ({_status(procs[label])}), {dirs[label] / 'process.log'}:\n"
            + tail(dirs[label] / "process.log")
            for label in labels
        )
        return RuntimeError(f"{heading}\n{logs}")

    try:
        for label, d in dirs.items():
            procs[label] = _start("server" if label == "server" else "client", d)
        deadline = time.monotonic() + timeout
        while True:
            codes = {label: p.poll() for label, p in procs.items()}
            failed = [label for label, code in codes.items() if code not in (None, 0)]
            if failed:
                raise failure(f"FedAvg {', '.join(failed)} failed:", failed)
            running = [label for label, code in codes.items() if code is None]
            if not running:
                break
            if time.monotonic() > deadline:
                still = ", ".join(running)
                raise failure(f"FedAvg did not finish in {timeout:.0f}s: {still}", running)
            time.sleep(0.1)
    finally:
        stop_processes(procs.values())
    return _results(folder, list(sites))


def _status(proc: subprocess.Popen[bytes]) -> str:
    return "still running" if proc.returncode is None else f"exit {proc.returncode}"


def _start(role: str, d: Path) -> subprocess.Popen[bytes]:
    """One process in its own process group (for stop_processes), output to process.log."""
    cmd = [sys.executable, "-m", "medswarm", "sim", "fedavg-process", role, str(d / "config.json")]
    with open(d / "process.log", "ab") as out:  # the child keeps its own copy of the fd
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )


def _results(folder: Path, sites: list[str]) -> dict[str, Any]:
    server = json.loads((folder / "server" / "result.json").read_text())
    per_node = {
        s: json.loads((folder / "clients" / s / "result.json").read_text())["result"] for s in sites
    }
    aucs = [r["auc"] for r in per_node.values() if r["auc"] is not None]
    return {
        "per_node": per_node,
        "mean_accuracy": float(np.mean([r["accuracy"] for r in per_node.values()])),
        "mean_auc": float(np.mean(aucs)) if aucs else None,
        "wall_seconds": server["wall_seconds"],
        "round_seconds": server["round_seconds"],
        "history": server["history"],
    }


# -- the server ------------------------------------------------------------------------------


async def _serve(cfg: dict[str, Any]) -> None:
    recipe, deadlines = Recipe.from_dict(cfg["recipe"]), cfg["deadlines"]
    clients = {site: parse_peer_addr(addr) for site, addr in cfg["clients"].items()}
    n_features = cfg["n_features"]
    key_pair = load_key_file(Path(cfg["key_file"]))
    me = peer_id_of(key_pair)
    host = build_host(key_pair)
    exchange = ParamExchange(host, SnapshotStore(), deadlines["io_seconds"])

    async def publish(kind: str, round_: int, samples: int, tensors: dict[str, Any]) -> None:
        snapshot = wire.Snapshot(kind, round_, me, samples, len(clients), tensors)
        await exchange.store.publish(snapshot)

    async with host.run([multiaddr.Multiaddr(cfg["listen"])]):
        await _connect(host, clients, deadlines)
        stats_spec = (wire.TensorSpec("stats", "float64", (3 * n_features,)),)
        stats = await _gather(exchange, clients, "stats", 0, stats_spec, deadlines)
        # Counts, sums and sums of squares add up: the sum is the pooled data's statistics.
        pooled = np.sum([tensors["stats"] for _, tensors in stats.values()], axis=0)
        rows = sum(header.samples for header, _ in stats.values())
        await publish("scaler", 0, rows, {"stats": pooled})
        params = fedavg_start(recipe, n_features)
        specs = wire.specs_of(params)
        history = []
        began = mark = time.perf_counter()
        await publish("global", 1, rows, params)
        for r in range(1, recipe.rounds + 1):
            updates = await _gather(exchange, clients, "params", r, specs, deadlines)
            params = fedavg_average([(h.samples, tensors) for h, tensors in updates.values()])
            await publish("global", r + 1, rows, params)
            now = time.perf_counter()
            history.append({"round": r, "seconds": now - mark})
            log.info("round %d: averaged %d clients in %.3fs", r, len(updates), now - mark)
            mark = now
        seconds = [h["seconds"] for h in history]
        result = {"wall_seconds": mark - began, "round_seconds": seconds, "history": history}
        Path(cfg["result"]).write_text(json.dumps(result, indent=1))
        await _linger(host, clients, deadlines["linger_seconds"])
        await host.close()


async def _linger(host: IHost, clients: Mapping[str, PeerInfo], seconds: float) -> None:
    """Serve the final model until every client has hung up (a client leaves only after its
    last fetch, or on failure, which the orchestrator reports), or `seconds` pass."""
    connections = host.get_network().connections
    with trio.move_on_after(seconds):
        while any(connections.get(info.peer_id) for info in clients.values()):
            await trio.sleep(0.05)


# -- a client --------------------------------------------------------------------------------


async def _train_site(cfg: dict[str, Any]) -> None:
    recipe, deadlines = Recipe.from_dict(cfg["recipe"]), cfg["deadlines"]
    schema = load_schema(Path(cfg["schema"]))
    split = split_validation(
        load_table(Path(cfg["data"]), schema), recipe.val_fraction, recipe.split_seed
    )
    test = load_test_set(Path(cfg["test"]), schema) if cfg.get("test") else None
    scored = scored_rows(split, test)  # its validation split, or the test set without one
    rows = len(split.train_y)
    server = parse_peer_addr(cfg["server"])
    key_pair = load_key_file(Path(cfg["key_file"]))
    me = peer_id_of(key_pair)
    host = build_host(key_pair)
    exchange = ParamExchange(host, SnapshotStore(), deadlines["io_seconds"])

    async def publish(kind: str, round_: int, tensors: dict[str, Any]) -> None:
        await exchange.store.publish(wire.Snapshot(kind, round_, me, rows, 1, tensors))

    async def fetch(kind: str, round_: int, specs: tuple[wire.TensorSpec, ...]) -> dict[str, Any]:
        return (await _fetch(exchange, "server", server, kind, round_, specs, deadlines))[1]

    async with host.run([multiaddr.Multiaddr(cfg["listen"])]):
        stats = {"stats": site_stats(split.train_x)}
        await publish("stats", 0, stats)
        await _connect(host, {"server": server}, deadlines)
        scaler = pooled_scaler([(await fetch("scaler", 0, wire.specs_of(stats)))["stats"]])
        train_x, scored_x = scaler.transform(split.train_x), scaler.transform(scored[0])
        specs = wire.specs_of(fedavg_start(recipe, scaler.n_features))
        training = Offload()
        for r in range(1, recipe.rounds + 1):
            params = await fetch("global", r, specs)
            # As a swarm node trains (`Offload`); r - 1: the baseline's 0-based round index.
            params = await training.run(
                fedavg_local_update, params, train_x, split.train_y, recipe, r - 1
            )
            await publish("params", r, params)
        final = await fetch("global", recipe.rounds + 1, specs)
        result = fedavg_evaluate(final, recipe, scored_x, scored[1])
        log.info("final model on %d rows: %s", result.n, result)
        record = {"site": cfg["site"], "train_rows": rows, "result": result.to_dict()}
        Path(cfg["result"]).write_text(json.dumps(record, indent=1))
        await host.close()


# -- shared ----------------------------------------------------------------------------------


async def _connect(host: IHost, peers: Mapping[str, PeerInfo], deadlines: dict[str, Any]) -> None:
    """Processes start at different moments (importing torch takes seconds, more with many
    processes on few cores): give the others as long to come up as a fetch may wait."""
    deadline = trio.current_time() + deadlines["wait_seconds"]
    pending = dict(peers)
    while pending:
        for name, info in list(pending.items()):
            try:
                await ensure_connected(host, info, deadlines["connect_seconds"])
                del pending[name]
            except PeerUnavailable:
                pass
        if pending and trio.current_time() >= deadline:
            late = ", ".join(pending)
            raise FedAvgError(f"unreachable after {deadlines['wait_seconds']:.0f}s: {late}")
        if pending:
            await trio.sleep(0.25)


async def _fetch(
    exchange: ParamExchange,
    name: str,
    info: PeerInfo,
    kind: str,
    round_: int,
    specs: tuple[wire.TensorSpec, ...],
    deadlines: dict[str, Any],
) -> Fetched:
    """`name`'s snapshot (kind, round_), waiting up to wait_seconds for it to be published."""
    wait = deadlines["wait_seconds"]
    deadline = trio.current_time() + wait
    expect = wire.Expectation(kind, round_, round_, specs)
    while True:
        # A peer holds a request at most MAX_SERVER_WAIT seconds: ask again until our deadline.
        remaining = min(deadline - trio.current_time(), MAX_SERVER_WAIT)
        try:
            return await exchange.fetch(
                info, round_, expect, remaining, deadlines["connect_seconds"]
            )
        except PeerMessageError as exc:
            if exc.rule != "truncated":  # a cut-off stream is a peer going away, not bad data
                raise FedAvgError(
                    f"{name} sent an invalid {kind} for round {round_}: {exc}"
                ) from exc
            reason = exc.detail
        except PeerUnavailable as exc:
            reason = exc.reason
        if trio.current_time() + RETRY_PAUSE >= deadline:
            raise FedAvgError(f"{name}: no {kind} for round {round_} within {wait:.0f}s ({reason})")
        await trio.sleep(RETRY_PAUSE)


async def _gather(
    exchange: ParamExchange,
    peers: Mapping[str, PeerInfo],
    kind: str,
    round_: int,
    specs: tuple[wire.TensorSpec, ...],
    deadlines: dict[str, Any],
) -> dict[str, Fetched]:
    """Every peer's snapshot, fetched concurrently, in the order of `peers` (not of arrival)."""
    got: dict[str, Fetched] = {}
    errors: list[str] = []

    async def one(name: str, info: PeerInfo) -> None:
        try:
            got[name] = await _fetch(exchange, name, info, kind, round_, specs, deadlines)
        except FedAvgError as exc:
            errors.append(str(exc))

    async with trio.open_nursery() as nursery:
        for name, info in peers.items():
            nursery.start_soon(one, name, info)
    if errors:
        raise FedAvgError("; ".join(sorted(errors)))
    return {name: got[name] for name in peers}


def _messages(exc: BaseException) -> list[str]:
    if isinstance(exc, BaseExceptionGroup):
        return [m for e in exc.exceptions for m in _messages(e)]
    return [str(exc)]


def run_process(role: str, config: Path) -> int:
    """Be the server or a client of a networked FedAvg run, as `config` (the JSON
    `run_fedavg_network` wrote) says; 0 on success, 1 after logging what failed. The hidden
    command `medswarm sim fedavg-process ROLE CONFIG` calls it in each process."""
    if role not in ("server", "client"):
        raise ValueError(f"unknown FedAvg role {role!r}: expected server or client")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("libp2p").setLevel(logging.WARNING)  # it logs every dial at INFO
    torch.set_num_threads(1)  # 1 + sites processes share the machine's cores
    cfg = json.loads(config.read_text())
    errors: list[str] = []
    try:
        trio.run(_serve if role == "server" else _train_site, cfg)
    except* (FedAvgError, GossipError, NodeError) as group:  # expected: a message, no traceback
        errors = _messages(group)
    for message in errors:
        log.error("%s", message)
    return 1 if errors else 0
