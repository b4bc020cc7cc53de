"""The node's life: intake, agree on scaling with the swarm, then the rounds of DESIGN.md.

Each round: train locally (worker thread, so the host keeps serving), snapshot and serve the
parameters, fetch the neighbours' concurrently with deadlines, merge, evaluate, append a metrics
record, checkpoint. A neighbour that is dead, slow or invalid is skipped for the round. A node
restarted over its output folder resumes from the last checkpoint.
"""

import json
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import multiaddr
import numpy as np
import torch
import trio
from libp2p.peer.peerinfo import PeerInfo

from gossip import wire
from gossip.errors import PeerMessageError, PeerUnavailable
from gossip.exchange import ParamExchange, SnapshotStore
from gossip.host import build_host, ensure_connected, parse_peer_addr
from gossip.identity import load_key_file, peer_id_of
from node import merge as merging
from node.checkpoint import (
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_params,
    write_atomic,
)
from node.config import NodeConfig
from node.dataset import Split, load_schema, load_table, split_validation
from node.metrics import append_record, read_records
from node.models import build_model
from node.scaling import Scaler, local_stats
from node.training import evaluate, train_local, training_seed

log = logging.getLogger(__name__)

RoundCallback = Callable[[dict[str, Any]], None]


@dataclass
class Arrival:
    peer: str
    header: wire.Header
    tensors: dict[str, np.ndarray]


def model_params(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_params(model: torch.nn.Module, params: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class NodeRunner:
    def __init__(self, cfg: NodeConfig, on_round: RoundCallback | None = None) -> None:
        self.cfg = cfg
        self.on_round = on_round or (lambda _record: None)
        self.out = cfg.node.output_dir
        self.key_pair = load_key_file(cfg.node.key_file)
        self.peer_id = peer_id_of(self.key_pair)
        self.neighbours: list[PeerInfo] = [parse_peer_addr(a) for a in cfg.node.neighbours]
        self.degree = len(self.neighbours)

    # -- setup ------------------------------------------------------------------------------

    def _load_data(self) -> Split:
        schema = load_schema(self.cfg.data.schema_file)
        table = load_table(self.cfg.data.path, schema)
        write_atomic(
            self.out / "cleaning.json", json.dumps(table.report.to_dict(), indent=1).encode()
        )
        return split_validation(table, self.cfg.data.validation_fraction, self.cfg.data.split_seed)

    async def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(self.cfg.training.threads)
        split = self._load_data()
        self.samples = len(split.train_y)
        checkpoint = load_checkpoint(self.out / "checkpoint")
        host = build_host(self.key_pair)
        self.exchange = ParamExchange(host, SnapshotStore(), self.cfg.timeouts.io_seconds)
        async with host.run([multiaddr.Multiaddr(self.cfg.node.listen)]):
            addrs = [str(a) for a in host.get_addrs()]
            write_atomic(
                self.out / "peer.json",
                json.dumps(
                    {"name": self.cfg.node.name, "peer_id": self.peer_id, "addrs": addrs}
                ).encode(),
            )
            log.info("node %s listening on %s", self.cfg.node.name, addrs)
            await self._wait_for_neighbours()
            if checkpoint is None:
                scaler = Scaler.from_stats(await self._agree_scaling(local_stats(split.train_x)))
                start = 1
            else:
                scaler = Scaler.from_dict(checkpoint.state["scaler"])
                start = checkpoint.round + 1
                self._truncate_metrics(checkpoint.round)
                log.info("resuming from checkpoint of round %d", checkpoint.round)
            summary = await self._train(split, scaler, checkpoint, start)
            await self._linger()
            await host.close()
        return summary

    async def _wait_for_neighbours(self) -> None:
        """Nodes start at different moments: give the neighbours a bounded time to come up."""
        deadline = trio.current_time() + self.cfg.timeouts.startup_seconds
        pending = list(self.neighbours)
        while pending and trio.current_time() < deadline:
            still = []
            for info in pending:
                try:
                    await ensure_connected(
                        self.exchange.host, info, self.cfg.timeouts.connect_seconds
                    )
                except PeerUnavailable:
                    still.append(info)
            pending = still
            if pending:
                await trio.sleep(0.25)
        for info in pending:
            log.warning("neighbour %s unreachable at start; going on", info.peer_id)

    async def _agree_scaling(self, stats: np.ndarray) -> np.ndarray:
        """Gossip-average the per-column sufficient statistics, so every site scales alike."""
        rounds = self.cfg.swarm.scaling_rounds
        specs = (wire.TensorSpec("stats", "float64", stats.shape),)
        for k in range(rounds):
            mine = {"stats": stats}
            expect = wire.Expectation("stats", k - self.cfg.swarm.max_staleness, rounds, specs)
            arrivals, _ = await self._exchange_round("stats", k, mine, 1, expect)
            contributions = [merging.Contribution(a.tensors, 1, a.header.degree) for a in arrivals]
            stats = merging.merge_metropolis(mine, 1, self.degree, contributions)["stats"]
        return stats

    # -- rounds -----------------------------------------------------------------------------

    async def _train(
        self, split: Split, scaler: Scaler, checkpoint: Checkpoint | None, start: int
    ) -> dict[str, Any]:
        cfg = self.cfg
        train_x, val_x = scaler.transform(split.train_x), scaler.transform(split.val_x)
        model = build_model(cfg.model.name, train_x.shape[1], cfg.model.hidden, cfg.model.init_seed)
        if checkpoint is None:
            save_params(self.out / "initial.safetensors", model_params(model))
        else:
            load_params(model, checkpoint.params)
        specs = wire.specs_of(model_params(model))
        settings = cfg.training.settings()
        records = read_records(self.metrics_path)
        record: dict[str, Any] = records[-1] if records else {}
        for r in range(start, cfg.swarm.rounds + 1):
            began = time.perf_counter()
            self.exchange.counters.reset()
            loss = await trio.to_thread.run_sync(
                train_local,
                model,
                train_x,
                split.train_y,
                settings,
                training_seed(cfg.training.seed, r),
            )
            local_eval = evaluate(model, val_x, split.val_y)
            own = model_params(model)
            expect = wire.Expectation(
                "params", r - cfg.swarm.max_staleness, cfg.swarm.rounds, specs
            )
            arrivals, failures = await self._exchange_round("params", r, own, self.samples, expect)
            contributions = [
                merging.Contribution(a.tensors, a.header.samples, a.header.degree) for a in arrivals
            ]
            merged = merging.merge(
                cfg.swarm.merge,
                own,
                self.samples,
                self.degree,
                contributions,
                cfg.swarm.trim_fraction,
            )
            load_params(model, merged)
            merged_eval = evaluate(model, val_x, split.val_y)
            record = {
                "round": r,
                "time": time.time(),
                "node": cfg.node.name,
                "peer_id": self.peer_id,
                "train_loss": loss,
                "train_samples": self.samples,
                "local": local_eval.to_dict(),
                "merged": merged_eval.to_dict(),
                "neighbours_reached": [a.peer for a in arrivals],
                "neighbours_total": self.degree,
                "failures": failures,
                "rejected_total": dict(self.exchange.counters.rejected),
                "bytes_sent": self.exchange.counters.bytes_sent,
                "bytes_received": self.exchange.counters.bytes_received,
                "round_seconds": time.perf_counter() - began,
                "peak_rss_mb": peak_rss_mb(),
            }
            append_record(self.metrics_path, record)
            save_checkpoint(self.out / "checkpoint", r, merged, {"scaler": scaler.to_dict()})
            self.on_round(record)
        summary = {
            "node": cfg.node.name,
            "peer_id": self.peer_id,
            "rounds": cfg.swarm.rounds,
            "final": record,
            "peak_rss_mb": peak_rss_mb(),
            "scaler": scaler.to_dict(),
        }
        write_atomic(self.out / "summary.json", json.dumps(summary, indent=1).encode())
        return summary

    async def _exchange_round(
        self,
        kind: str,
        round_: int,
        own: dict[str, np.ndarray],
        samples: int,
        expect: wire.Expectation,
    ) -> tuple[list[Arrival], dict[str, str]]:
        """Serve our snapshot for the round and fetch every neighbour's concurrently."""
        await self.exchange.store.publish(
            wire.Snapshot(kind, round_, self.peer_id, samples, max(self.degree, 1), own)
        )
        arrivals: list[Arrival] = []
        failures: dict[str, str] = {}
        timeouts = self.cfg.timeouts

        async def fetch_one(info: PeerInfo) -> None:
            peer = info.peer_id.to_base58()
            try:
                header, tensors = await self.exchange.fetch(
                    info, round_, expect, timeouts.fetch_seconds, timeouts.connect_seconds
                )
                arrivals.append(Arrival(peer, header, tensors))
            except PeerMessageError as exc:
                log.warning("round %d: dropped message: %s", round_, exc)
                failures[peer] = f"rejected ({exc.rule}): {exc.detail}"
            except PeerUnavailable as exc:
                failures[peer] = exc.reason

        async with trio.open_nursery() as nursery:
            for info in self.neighbours:
                nursery.start_soon(fetch_one, info)
        arrivals.sort(key=lambda a: a.peer)  # merge order independent of arrival timing
        return arrivals, failures

    async def _linger(self) -> None:
        """Keep serving the final round until every neighbour took it, or the linger time ends."""
        final = self.cfg.swarm.rounds
        wanted = {info.peer_id.to_base58() for info in self.neighbours}
        with trio.move_on_after(self.cfg.timeouts.linger_seconds):
            while any(self.exchange.counters.served.get(p, -1) < final for p in wanted):
                await trio.sleep(0.1)

    # -- metrics file -----------------------------------------------------------------------

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    def _truncate_metrics(self, last_round: int) -> None:
        """Drop records newer than the checkpoint: those rounds are about to be redone."""
        kept = [r for r in read_records(self.metrics_path) if r["round"] <= last_round]
        write_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode())
