"""`medswarm bench swarm`: the heart-disease swarm's time per round, bytes, memory and
accuracies."""

import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from node.metrics import read_records
from sim.local_swarm import _mean, init_heart_disease_swarm, run_swarm


def run_swarm_bench(rounds: int, console: Console) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="medswarm-bench-") as tmp:
        folder = Path(tmp)
        init_heart_disease_swarm(folder, rounds=rounds)
        results = run_swarm(folder, console)
        per_node = {}
        finished: dict[int, float] = {}  # round -> when the last node finished it
        for name in results["nodes"]:
            records = read_records(folder / "nodes" / name / "out" / "metrics.jsonl")
            for r in records:
                finished[r["round"]] = max(finished.get(r["round"], 0.0), r["time"])
            per_node[name] = {
                "round_seconds_mean": _mean([r["round_seconds"] for r in records]),
                "bytes_sent_per_round": _mean([r["bytes_sent"] for r in records]),
                "bytes_received_per_round": _mean([r["bytes_received"] for r in records]),
                "peak_rss_mb": results["nodes"][name]["peak_rss_mb"],
            }
    bench = {
        "rounds": rounds,
        "nodes": len(per_node),
        "wall_seconds": results["wall_seconds"],
        # Swarm-wide pace once every node is up: round 1 also holds start-up and scaling.
        "round_wall_seconds": (finished[rounds] - finished[1]) / max(rounds - 1, 1),
        "per_node": per_node,
        "accuracy": {k: v["accuracy"] for k, v in results["mean"].items()},
        "auc": {k: v["auc"] for k, v in results["mean"].items()},
    }
    console.print_json(data=bench)
    return bench
