"""`medswarm bench scale` end to end on a tiny workload (4 nodes, 2,000 rows, 3 rounds, inproc):
one child process runs the scenario, and the JSON has the shape the issue asks for."""

import json

import pytest
from rich.console import Console

from medswarm.bench.scale import Workload, run_scale_bench

pytestmark = pytest.mark.integration

TINY = Workload(
    name="tiny", nodes=4, rows=2000, features=8, test_fraction=0.2, hidden=(8,), rounds=3,
    alpha=0.5, topologies=("full",), startup_seconds=30.0,
)  # fmt: skip
KEYS = {
    "workload", "backend", "nodes", "whole_seconds", "rounds_seconds", "peak_rss_mb",
    "accuracy_mean", "accuracy_min", "fedavg_accuracy", "bytes_per_node_round",
}  # fmt: skip


def test_a_tiny_run_reports_every_number(tmp_path):
    console = Console(record=True, width=200)
    results = run_scale_bench(console, [TINY], ["inproc"], keep=tmp_path)
    results = json.loads(json.dumps(results))  # what --json writes
    (run,) = results["runs"]
    assert "error" not in run, run
    assert set(run) >= KEYS
    assert (run["workload"], run["backend"], run["topology"], run["nodes"]) == (
        "tiny", "inproc", "full", 4,
    )  # fmt: skip
    assert 0 < run["rounds_seconds"] < run["whole_seconds"] < run["until_exit_seconds"]
    assert run["until_exit_seconds"] < run["child_seconds"]
    summary = json.loads((tmp_path / "scale-tiny-inproc-full" / "summary.json").read_text())
    if "peak_rss_mb_total" in summary:  # the run sampled its processes' summed memory
        assert run["peak_rss_mb"] == summary["peak_rss_mb_total"] > 100
    else:  # inproc: the one process holds every node
        assert run["peak_rss_mb"] == run["driver_peak_rss_mb"] > 100
    assert [r["round"] for r in run["accuracy_per_round"]] == [1, 2, 3]
    assert len(run["fedavg_accuracy_per_round"]) == 3
    last = run["accuracy_per_round"][-1]
    assert run["accuracy_mean"] == last["mean"] and run["accuracy_min"] == last["min"]
    assert 0 <= run["accuracy_min"] <= run["accuracy_mean"] <= run["accuracy_max"] <= 1
    assert run["fedavg_accuracy"] == run["fedavg_accuracy_per_round"][-1]
    assert run["arrival_rate"] == 1.0 and run["every_round_completed"]
    assert run["bytes_per_node_round"] > run["bytes_sent_per_node_round"] > 0
    assert run["targets"] == {}  # a workload the issue sets no targets for
    text = console.export_text()
    assert "medswarm bench scale" in text and "tiny (4 nodes) inproc complete" in text
    kept = tmp_path / "scale-tiny-inproc-full"
    assert (kept / "summary.json").exists() and (kept / "data" / "test-set").is_dir()
