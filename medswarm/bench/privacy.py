"""`medswarm bench privacy`: what differential privacy and secure aggregation cost and give.

- dp: the breast-cancer and heart-disease swarms at each epsilon (none = DP-SGD off), delta
  1e-5: mean accuracy and AUC of the swarm's models, the privacy audit's membership-inference
  AUC (the loss-threshold attack on each hospital's last published model, mean over
  hospitals), and the training time per round against the same swarm without DP-SGD.
- secure_aggregation, at 4, 8 and 16 neighbours: the largest difference between the secure
  sum and the plain Metropolis merge of the same models (real libp2p hosts, one process), and
  a swarm of neighbours + 1 fully connected node processes with and without secure
  aggregation, alternately, `repeats` times each: the ratio of the median time per round
  (rounds 2 on) and of the bytes each node sends per round.
"""

import tempfile
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr
from rich.console import Console

from gossip import secure_agg
from gossip.exchange import ParamExchange, SnapshotStore
from gossip.host import build_host, close_host
from gossip.secure_agg import MaskingKeys, SecAggMember
from medswarm.bench.tables import bench_table
from node.merge import MergeSettings, merge_metropolis, merge_secure_sum, metropolis_weight
from node.metrics import read_records
from node.params import Neighbour, flatten
from sim.run import run_scenario
from sim.scenario import PrivacyScenario, Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "sim" / "scenarios"
DP_SCENARIOS = {"breast-cancer": "privacy.toml", "heart-disease": "heart-disease.toml"}
DELTA = 1e-5


def dp_variant(base: Scenario, epsilon: float | None, rounds: int | None) -> Scenario:
    """`base` on the in-process backend with no chain and no baselines, DP-SGD at `epsilon`
    (None: off), delta 1e-5 and the privacy audit."""
    privacy = (
        PrivacyScenario(audit=True)
        if epsilon is None
        else PrivacyScenario(target_epsilon=epsilon, delta=DELTA, audit=True)
    )
    baselines = base.baselines.model_copy(
        update={"local_only": False, "centralized": False, "fedavg": False, "fedavg_network": False}
    )
    return base.model_copy(
        update={
            "backend": "inproc",
            "seeds": base.seeds[:1],
            "rounds": rounds or base.rounds,
            "privacy": privacy,
            "chain": base.chain.model_copy(update={"backend": "none", "max_epsilon": None}),
            "baselines": baselines,
        }
    )


def _train_seconds(run: Path, nodes: Sequence[str]) -> float:
    """Mean training time per node per round (round 1 holds torch's warm-up: left out)."""
    times = [
        r["train_seconds"]
        for n in nodes
        for r in read_records(run / "nodes" / n / "out" / "metrics.jsonl")
        if r["round"] > 1
    ]
    return float(np.mean(times))


def dp_rows(
    console: Console, work: Path, epsilons: Sequence[float | None], rounds: int | None
) -> list[dict[str, Any]]:
    rows = []
    for name, file in DP_SCENARIOS.items():
        base = load_scenario(SCENARIOS / file)
        plain_seconds = None
        for epsilon in epsilons:
            label = "none" if epsilon is None else f"{epsilon:g}"
            out = work / f"{name}-eps-{label}"
            [summary] = run_scenario(dp_variant(base, epsilon, rounds), out, console)
            seconds = _train_seconds(out, list(summary["nodes"]))
            if epsilon is None:
                plain_seconds = seconds
            rows.append(
                {
                    "scenario": name,
                    "epsilon": epsilon,
                    "delta": None if epsilon is None else DELTA,
                    "accuracy": summary["mean"]["accuracy"],
                    "auc": summary["mean"]["auc"],
                    "mia_auc": summary["privacy"]["mean_mia_auc"],
                    "mia_auc_calibrated": summary["privacy"]["mean_mia_auc_calibrated"],
                    "epsilon_spent": summary["privacy"]["max_epsilon"],
                    "train_seconds": seconds,
                    "train_seconds_ratio": None if not plain_seconds else seconds / plain_seconds,
                }
            )
    return rows


def swarm_variant(base: Scenario, neighbours: int, secure: bool, rounds: int) -> Scenario:
    """`neighbours + 1` fully connected processes on breast cancer, secure aggregation on or
    off, nothing else."""
    data = base.data.model_copy(update={"nodes": neighbours + 1, "alpha": 1.0, "min_rows": 10})
    baselines = base.baselines.model_copy(
        update={"local_only": False, "centralized": False, "fedavg": False, "fedavg_network": False}
    )
    return base.model_copy(
        update={
            "backend": "process",
            "rounds": rounds,
            "data": data,
            "topology": base.topology.model_copy(update={"kind": "full", "schedule": "all"}),
            "privacy": PrivacyScenario(secure_aggregation=secure, audit=False),
            "chain": base.chain.model_copy(update={"backend": "none", "max_epsilon": None}),
            "baselines": baselines,
        }
    )


def _per_round(summary: dict[str, Any], run: Path) -> tuple[float, float]:
    """(seconds per round from round 2 on, bytes a node sends per round)."""
    records = {
        n: read_records(run / "nodes" / n / "out" / "metrics.jsonl") for n in summary["nodes"]
    }
    sent = [r["bytes_sent"] for rs in records.values() for r in rs if r["round"] > 1]
    return summary["rounds_wall_seconds"] / (summary["rounds"] - 1), float(np.mean(sent))


def secure_rows(
    console: Console, work: Path, neighbour_counts: Sequence[int], rounds: int, repeats: int
) -> list[dict[str, Any]]:
    base = load_scenario(SCENARIOS / "privacy.toml")
    rows = []
    for k in neighbour_counts:
        error = trio.run(protocol_error, k, base_model_size(base))
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for repeat in range(repeats):  # alternating, so a busier stretch hits both alike
            for secure in (False, True):
                out = work / f"secagg-{k}-{'on' if secure else 'off'}-{repeat}"
                [summary] = run_scenario(swarm_variant(base, k, secure, rounds), out, console)
                runs[secure].append(_per_round(summary, out))
        paces = {
            secure: (median([s for s, _ in r]), median([b for _, b in r]))
            for secure, r in runs.items()
        }
        rows.append(
            {
                "neighbours": k,
                "max_abs_error": error,
                "round_seconds": paces[True][0],
                "round_seconds_plain": paces[False][0],
                "round_seconds_ratio": paces[True][0] / paces[False][0],
                "bytes_per_round": paces[True][1],
                "bytes_per_round_plain": paces[False][1],
                "bytes_ratio": paces[True][1] / paces[False][1],
                "runs": repeats,
            }
        )
    return rows


def base_model_size(base: Scenario) -> int:
    """The parameter count of the scenario's model on breast cancer's 30 features."""
    width, total = 30, 0
    for h in [*base.model.hidden, 1] if base.model.name == "mlp" else [1]:
        total += width * h + h
        width = h
    return total


def run_privacy_bench(
    console: Console,
    epsilons: Sequence[float | None],
    neighbour_counts: Sequence[int],
    rounds: int | None,
    secure_rounds: int,
    repeats: int = 2,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="medswarm-bench-privacy-") as tmp:
        work = Path(tmp)
        quiet = Console(file=open(work / "runs.log", "w"), width=120)  # noqa: SIM115
        try:
            dp = dp_rows(quiet, work, epsilons, rounds)
            secure = secure_rows(quiet, work, neighbour_counts, secure_rounds, repeats)
        finally:
            quiet.file.close()
    result = {"dp": dp, "secure_aggregation": secure}
    _print(console, result)
    return result


def _print(console: Console, result: dict[str, Any]) -> None:
    dp = bench_table(
        "differential privacy (DP-SGD), delta 1e-5",
        ["scenario", "epsilon", "accuracy", "AUC", "attack AUC", "calibrated", "train time x"],
        left={"scenario"},
    )
    for r in result["dp"]:
        dp.add_row(
            r["scenario"], "none" if r["epsilon"] is None else f"{r['epsilon']:g}",
            f"{r['accuracy']:.3f}", f"{r['auc']:.3f}", _f(r["mia_auc"]),
            _f(r["mia_auc_calibrated"]), _f(r["train_seconds_ratio"], 2),
        )  # fmt: skip
    dp.columns[0].min_width = 13
    console.print(dp)
    sa = bench_table(
        "secure aggregation",
        ["neighbours", "max abs error", "s per round", "plain", "round time x", "bytes x"],
    )
    for r in result["secure_aggregation"]:
        sa.add_row(
            str(r["neighbours"]), f"{r['max_abs_error']:.2e}", f"{r['round_seconds']:.3f}",
            f"{r['round_seconds_plain']:.3f}", f"{r['round_seconds_ratio']:.2f}",
            f"{r['bytes_ratio']:.2f}",
        )  # fmt: skip
    console.print(sa)


def _f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


async def protocol_error(neighbours: int, length: int, rounds: int = 3) -> float:
    """The largest difference, over `rounds` aggregations of random models, between secure
    aggregation's merge and the plain Metropolis merge: one aggregating host and its
    neighbours, real libp2p hosts on loopback in one process."""
    rng = np.random.default_rng(0)
    hosts = [build_host(create_new_key_pair()) for _ in range(neighbours + 1)]
    exchanges = [ParamExchange(h, SnapshotStore(), 5.0) for h in hosts]
    peers = [h.get_id().to_base58() for h in hosts]
    keys = [X25519PrivateKey.generate() for _ in hosts]
    registry = {p: k.public_key().public_bytes_raw() for p, k in zip(peers, keys, strict=True)}
    samples = [int(n) for n in rng.integers(10, 200, len(hosts))]
    members = [
        SecAggMember(p, "bench", MaskingKeys(k, registry.get), metropolis_weight, 0.5)
        for p, k in zip(peers, keys, strict=True)
    ]
    for exchange, member in zip(exchanges, members, strict=True):
        exchange.handlers[secure_agg.KIND] = member.handle
    worst = 0.0
    async with AsyncExitStack() as stack:
        for host in hosts:
            await stack.enter_async_context(host.run([Multiaddr("/ip4/127.0.0.1/tcp/0")]))
        infos = [PeerInfo(h.get_id(), h.get_addrs()) for h in hosts[1:]]
        for r in range(1, rounds + 1):
            models = [{"w": rng.normal(0, 1, length).astype(np.float32)} for _ in hosts]
            for member, model, n in zip(members[1:], models[1:], samples[1:], strict=True):
                await member.offer(r, flatten(model), n, neighbours)
            result = await secure_agg.aggregate(
                exchanges[0], peers[0], "bench", infos, r, samples[0], neighbours, length, 0.5,
                metropolis_weight, secure_agg.Deadlines(20.0, 10.0, 5.0),
            )  # fmt: skip
            assert result.total is not None, result.failures
            secure = merge_secure_sum(models[0], 1 - sum(result.weights.values()), result.total)
            own = Neighbour(peers[0], models[0], samples[0], neighbours)
            arrived = [
                Neighbour(p, m, n, neighbours)
                for p, m, n in zip(peers[1:], models[1:], samples[1:], strict=True)
            ]
            plain = merge_metropolis(own, sorted(arrived, key=lambda a: a.peer), MergeSettings())
            worst = max(worst, float(np.abs(secure["w"] - plain["w"]).max()))
        for host in hosts:
            await close_host(host)
    return worst
