"""`medswarm bench scale` without running a swarm: its scenarios load, its runs are the ones
asked for, and the targets are held to the numbers."""

from dataclasses import replace

import pytest

from medswarm.bench.scale import (
    WORKLOADS,
    plan_runs,
    scenario_text,
    targets_for,
    workloads_named,
)
from node.config import SwarmSection
from sim.scenario import load_scenario


@pytest.mark.parametrize(("workload", "topology"), [("20", "full"), ("1000", "k_regular")])
def test_the_workloads_are_valid_scenarios(tmp_path, workload, topology):
    w = WORKLOADS[workload]
    path = tmp_path / "s.toml"
    path.write_text(scenario_text(replace(w, rows=4000, nodes=8), "inproc", topology))
    scenario = load_scenario(path)
    assert scenario.data.synthetic is not None and scenario.data.synthetic.features == 64
    assert scenario.data.test_fraction == w.test_fraction
    assert scenario.model.hidden == list(w.hidden) and scenario.rounds == w.rounds
    assert scenario.topology.kind == topology
    assert (scenario.topology.degree == 4) == (topology == "k_regular")
    assert scenario.baselines.fedavg and not scenario.baselines.local_only
    assert scenario.swarm.merge == SwarmSection().merge  # the nodes' default rule
    assert scenario.workers == 1


def test_inproc_nodes_can_share_several_processes(tmp_path):
    w = replace(WORKLOADS["20"], rows=4000, nodes=8)
    path = tmp_path / "s.toml"
    path.write_text(scenario_text(w, "inproc", "full", workers=2))
    assert load_scenario(path).workers == 2
    path.write_text(scenario_text(w, "process", "full", workers=2))
    assert load_scenario(path).workers == 1  # one process per node already


def test_the_issue_s_workload_is_what_it_says():
    w = WORKLOADS["20"]
    assert (w.nodes, w.rows, w.features, w.hidden, w.rounds, w.alpha) == (
        20, 200_000, 64, (64,), 20, 0.3,
    )  # fmt: skip
    big = WORKLOADS["1000"]
    per_node = big.rows * (1 - big.test_fraction) / big.nodes
    assert big.nodes == 1000 and 100 <= per_node <= 200 and big.topologies == ("k_regular",)


def test_runs_default_per_workload_and_follow_the_options():
    both = workloads_named(["20", "1000"])
    runs = [(w.name, b, t) for w, b, t in plan_runs(both)]
    assert runs == [
        ("20", "inproc", "full"), ("20", "inproc", "k_regular"),
        ("20", "process", "full"), ("20", "process", "k_regular"),
        ("1000", "inproc", "k_regular"),
    ]  # fmt: skip
    runs = [(w.name, b, t) for w, b, t in plan_runs(both, ["process"], ["full"])]
    assert runs == [("20", "process", "full")]  # 1,000 nodes only on its 4-regular graph
    assert workloads_named(["1000"], rounds=3)[0].rounds == 3
    with pytest.raises(ValueError, match="unknown workload"):
        workloads_named(["30"])
    with pytest.raises(ValueError, match="unknown topology 'ring'"):
        plan_runs(both, None, ["ring"])


def row(**changes):
    base = {
        "workload": "20", "backend": "inproc", "topology": "full", "rounds": 20,
        "whole_seconds": 24.0, "rounds_seconds": 10.0, "peak_rss_mb": 900.0,
        "accuracy_mean": 0.900, "accuracy_min": 0.897, "fedavg_accuracy": 0.901,
        "arrival_rate": 1.0, "rounds_completed_min": 20, "every_round_completed": True,
    }  # fmt: skip
    return base | changes


def met(r):
    return {k: v["met"] for k, v in targets_for(r).items()}


def test_the_20_site_targets():
    assert all(met(row()).values()) and len(met(row())) == 5
    assert met(row(whole_seconds=25.0))["whole run < 25 s"] is False
    assert met(row(peak_rss_mb=1100.0))["peak memory < 1 GiB"] is False
    assert met(row(rounds_seconds=10.5))["rounds 2..N <= 10 s"] is False
    assert met(row(rounds_seconds=None))["rounds 2..N <= 10 s"] is None
    gaps = met(row(accuracy_mean=0.898, accuracy_min=0.897))
    assert gaps["complete graph: mean within 0.2 points of FedAvg"] is False
    assert gaps["complete graph: min within 0.5 points of FedAvg"] is True
    assert (
        met(row(accuracy_min=0.895, fedavg_accuracy=0.901 + 0.001))[
            "complete graph: min within 0.5 points of FedAvg"
        ]
        is False
    )
    ring = met(row(topology="k_regular", accuracy_mean=0.892))
    assert ring["4-regular: mean within 1 point of FedAvg by the last round"] is True
    assert not any("complete" in k for k in ring)
    ring = met(row(topology="k_regular", accuracy_mean=0.890))
    assert ring["4-regular: mean within 1 point of FedAvg by the last round"] is False


def test_the_1000_node_targets():
    big = row(workload="1000", topology="k_regular", rounds=5, rounds_completed_min=5,
              peak_rss_mb=4000.0, arrival_rate=0.99)  # fmt: skip
    assert met(big) == {
        "every round completes": True,
        ">= 99% of neighbour models arrive": True,
        "peak memory < 4 GiB": True,
    }
    assert met(big | {"arrival_rate": 0.985})[">= 99% of neighbour models arrive"] is False
    assert met(big | {"every_round_completed": False})["every round completes"] is False
    assert met(big | {"peak_rss_mb": 4096.0})["peak memory < 4 GiB"] is False
    assert targets_for({"workload": "1000", "error": "exit code 1"}) == {}
