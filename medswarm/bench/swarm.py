"""`medswarm bench swarm`: the heart-disease swarm (ring, no chain) as a scenario run: time
per round, bytes, memory and accuracies against the baselines."""

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from node.metrics import read_records
from sim.run import rounds_wall
from sim.swarm import RUN_FOLDER, init_swarm_scenario, run_swarm_folder


def run_swarm_bench(rounds: int, console: Console) -> dict[str, Any]:
    """The heart-disease swarm (ring, no chain) as a scenario run: pace, bytes, memory and the
    accuracies against the baselines."""
    with tempfile.TemporaryDirectory(prefix="medswarm-bench-") as tmp:
        folder = Path(tmp)
        init_swarm_scenario(folder, rounds=rounds)
        [summary] = run_swarm_folder(folder, console)
        records = {
            name: read_records(folder / RUN_FOLDER / "nodes" / name / "out" / "metrics.jsonl")
            for name in summary["nodes"]
        }
    per_node = {
        name: {
            "round_seconds_mean": _mean([r["round_seconds"] for r in rs]),
            "bytes_sent_per_round": _mean([r["bytes_sent"] for r in rs]),
            "bytes_received_per_round": _mean([r["bytes_received"] for r in rs]),
            "peak_rss_mb": summary["nodes"][name]["peak_rss_mb"],
        }
        for name, rs in records.items()
    }
    baselines = summary["baselines"]
    means = {
        "swarm": summary["mean"],
        "local_only": _means_of(baselines["local_only"]),
        "pooled": _means_of(baselines["centralized"]),
        "fedavg": _means_of(baselines["fedavg"]),
    }
    bench = {
        "rounds": rounds,
        "nodes": len(per_node),
        "wall_seconds": summary["wall_seconds"],
        # Swarm-wide pace once every node is up: round 1 also holds start-up and scaling.
        "round_wall_seconds": (rounds_wall(records, rounds) or 0.0) / max(rounds - 1, 1),
        "per_node": per_node,
        "accuracy": {k: v["accuracy"] for k, v in means.items()},
        "auc": {k: v["auc"] for k, v in means.items()},
    }
    console.print_json(data=bench)
    return bench


def _means_of(baseline: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": baseline["mean_accuracy"], "auc": baseline["mean_auc"]}


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
