import json
import os
from pathlib import Path
from typing import Any

import pytest

from medswarm.web.run_state import NotARunFolder, RunState, check_run_folder
from sim.consensus import consensus_at
from sim.run_folder import in_effect
from tests.unit.medswarm.dashboard_folder import KEY_FILES, NAMES, PEERS, FakeRun

PARTITION = {"label": "partition", "from": 3, "to": 4}
GAMMA_DOWN = {"label": "gamma down", "from": 2, "to": 3}


def kinds(events: list[tuple[str, Any]]) -> list[str]:
    return [kind for kind, _ in events]


def test_a_folder_without_a_run_is_refused_with_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(NotARunFolder, match="run.json or swarm.json"):
        check_run_folder(tmp_path)
    with pytest.raises(NotARunFolder, match="not a folder"):
        check_run_folder(tmp_path / "missing")
    FakeRun(tmp_path / "run")
    check_run_folder(tmp_path / "run")
    FakeRun(tmp_path / "seeds" / "seed-3")
    check_run_folder(tmp_path / "seeds")


def test_records_arrive_once_each_with_scores_by_node_name(tmp_path: Path) -> None:
    run = FakeRun(tmp_path)
    state = RunState(tmp_path)
    first = state.poll()
    assert kinds(first) == ["snapshot"]
    assert first[0][1]["status"]["nodes"] == NAMES
    assert first[0][1]["status"]["peers"] == {p: n for n, p in PEERS.items()}
    assert state.poll() == []  # nothing new
    run.record("alpha", 1)
    run.record("beta", 1, partial=True)  # being written
    events = dict(state.poll())
    assert list(events["records"]) == ["alpha"]
    (record,) = events["records"]["alpha"]["records"]
    assert record["round"] == 1 and record["accuracy"] == 0.51 and record["bytes_sent"] == 1001
    assert record["scores"] == {"beta": pytest.approx(0.1), "gamma": pytest.approx(0.2)}
    assert events["status"]["latest"] == {"alpha": 1, "beta": 0, "gamma": 0}
    run.finish_line("beta")
    events = dict(state.poll())
    assert [r["round"] for r in events["records"]["beta"]["records"]] == [1]
    assert [len(state.snapshot()["records"][n]) for n in NAMES] == [1, 1, 0]


def test_the_faults_in_effect_follow_the_slowest_node(tmp_path: Path) -> None:
    assert in_effect([PARTITION], 2) == [] and in_effect([PARTITION], 3) == ["partition"]
    run = FakeRun(tmp_path, windows=[PARTITION])
    state = RunState(tmp_path)
    state.poll()
    for r in (1, 2, 3):
        for n in NAMES:
            run.record(n, r)
    run.record("alpha", 4)
    run.record("alpha", 5)
    status = dict(state.poll())["status"]
    assert status["current_round"] == 3 and status["in_effect"] == ["partition"]
    for n in ("beta", "gamma"):
        for r in (4, 5):
            run.record(n, r)
    status = dict(state.poll())["status"]
    assert status["current_round"] == 5 and status["in_effect"] == []
    assert status["fault_windows"] == [PARTITION]


def test_consensus_distance_comes_round_by_round_once_every_node_has_it(tmp_path: Path) -> None:
    run = FakeRun(tmp_path, windows=[GAMMA_DOWN])
    state = RunState(tmp_path)
    state.poll()
    for n in NAMES:
        run.record(n, 1)
    run.record("alpha", 2)
    events = dict(state.poll())
    assert events["consensus"] == {
        "replace": False,
        "points": [{"round": 1, "distance": consensus_at(tmp_path, NAMES, 1)}],
    }
    run.record("beta", 2)  # gamma is down in rounds 2-3: round 2 needs only alpha and beta
    run.record("alpha", 3)
    points = dict(state.poll())["consensus"]["points"]
    assert [p["round"] for p in points] == [2]
    assert points[0]["distance"] == consensus_at(tmp_path, ["alpha", "beta"], 2)
    run.record("gamma", 4)  # back, and round 3 still waits for beta
    assert "consensus" not in dict(state.poll())
    run.record("beta", 3)
    assert [p["round"] for p in dict(state.poll())["consensus"]["points"]] == [3]


def test_the_end_brings_the_summary_and_consensus_json(tmp_path: Path) -> None:
    run = FakeRun(tmp_path, rounds=2)
    state = RunState(tmp_path)
    state.poll()
    for r in (1, 2):
        for n in NAMES:
            run.record(n, r)
    state.poll()
    final = [{"round": 1, "distance": 0.5}, {"round": 2, "distance": 0.25}]
    summary = run.finish(final)
    events = dict(state.poll())
    assert events["consensus"] == {"replace": True, "points": final}
    status = events["status"]
    assert status["finished"] and status["complete"] and status["report"] == "report.html"
    assert status["summary"]["mean"] == summary["mean"]
    for n in NAMES:
        for key in ("accuracy", "contribution", "reward_eth", "bytes_sent"):
            assert status["summary"]["nodes"][n][key] == summary["nodes"][n][key]
    assert state.poll() == []


def test_several_seeds_show_the_newest(tmp_path: Path) -> None:
    FakeRun(tmp_path / "seed-0")
    state = RunState(tmp_path)
    (event,) = state.poll()
    assert event[1]["status"]["folder"] == "seed-0" and event[1]["status"]["multi_seed"]
    later = FakeRun(tmp_path / "seed-1")
    later.record("alpha", 1)
    (event,) = state.poll()
    assert event[0] == "snapshot"
    assert event[1]["status"]["folder"] == "seed-1"
    assert event[1]["status"]["seeds"] == ["seed-0", "seed-1"]
    assert [r["round"] for r in event[1]["records"]["alpha"]] == [1]


def test_only_the_report_and_its_plots_are_ever_served(tmp_path: Path) -> None:
    run = FakeRun(tmp_path, rounds=1)
    state = RunState(tmp_path)
    state.poll()
    assert state.report_file("report.html") is None  # not written yet
    run.finish([])
    (tmp_path / "nodes" / "alpha" / "out" / "leak.png").write_bytes(b"not the report's")
    os.symlink(tmp_path / "nodes" / "alpha" / "eth.key", tmp_path / "key.png")
    os.symlink(tmp_path / "nodes", tmp_path / "nodes.html")
    assert state.report_file("report.html") == tmp_path / "report.html"
    assert state.report_file("accuracy.png") == tmp_path / "accuracy.png"
    refused = [
        *KEY_FILES,
        "key.png",
        "nodes.html",
        "summary.json",
        "run.json",
        "swarm.json",
        "../report.html",
        "nodes/alpha/eth.key",
        "nodes/alpha/out/leak.png",
        str(tmp_path / "report.html"),
        "..",
        "",
    ]
    for name in refused:
        assert state.report_file(name) is None, name
    assert json.dumps(state.snapshot()).count("abab") == 0  # no key's bytes in the state
