"""The simulator end to end on the process backend: a heart-disease scenario with a node killed
and restarted and a network partition, every output written, numbers that make sense; a node
frozen and thawed."""

import json

import numpy as np
import pytest
from rich.console import Console

from gossip.identity import load_key_file, peer_id_of
from node.metrics import read_records
from sim.run import run_scenario
from tests.integration.swarm_support import final_params, metrics

pytestmark = pytest.mark.integration

ROUNDS = 18
# The four heart-disease hospitals, as every scenario here names them ({data}: their folder).
SITES = """[data]
schema = "{data}/schema.toml"
[data.sites]
cleveland = "{data}/processed.cleveland.data"
hungarian = "{data}/processed.hungarian.data"
switzerland = "{data}/processed.switzerland.data"
va = "{data}/processed.va.data"
"""
SCENARIO = f"""
name = "faults-small"
rounds = {ROUNDS}

{SITES}
[topology]
kind = "full"

[baselines]
local_only = true
centralized = true
fedavg = true
fedavg_network = true
target_accuracy = 0.75

[[faults]]
kind = "kill"
node = "va"
at = 3
restart = 5

[[faults]]
kind = "partition"
groups = [["cleveland", "hungarian"], ["switzerland", "va"]]
from = 8
to = 11
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from sim.local_swarm import HEART_DISEASE

    folder = tmp_path_factory.mktemp("sim")
    scenario = folder / "scenario.toml"
    scenario.write_text(SCENARIO.replace("{data}", str(HEART_DISEASE)))
    [summary] = run_scenario(scenario, folder / "out", Console(quiet=True))
    return folder / "out", summary


def test_every_output_is_written(run):
    out, summary = run
    for name in ("summary.json", "consensus.json", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0, name
    for plot in ("accuracy.png", "consensus.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_the_numbers_make_sense(run):
    _, summary = run
    assert set(summary["nodes"]) == {"cleveland", "hungarian", "switzerland", "va"}
    assert summary["mean"]["accuracy"] > 0.7
    assert summary["mean"]["auc"] > 0.8
    baselines = summary["baselines"]
    assert set(baselines) == {"local_only", "centralized", "fedavg", "fedavg_network"}
    assert len(baselines["fedavg"]["history"]) == ROUNDS
    # FedAvg as server and client processes computes the very model of the one-process run.
    network = baselines["fedavg_network"]
    for site, result in baselines["fedavg"]["per_node"].items():
        assert network["per_node"][site] == pytest.approx(result, abs=1e-6), site
    assert 0 < network["rounds_wall_seconds"] < network["wall_seconds"]
    assert 0 < summary["rounds_wall_seconds"] < summary["wall_seconds"]
    # The swarm lands near the server-based FedAvg on the same partitions and model.
    assert abs(summary["mean"]["accuracy"] - baselines["fedavg"]["mean_accuracy"]) < 0.05
    for node in summary["nodes"].values():
        assert node["bytes_sent"] > 0 and node["peak_rss_mb"] > 0
        assert node["rounds_to_target"] is None or 1 <= node["rounds_to_target"] <= ROUNDS


def test_the_killed_node_restarts_and_finishes_every_round(run):
    out, _ = run
    records = read_records(out / "nodes" / "va" / "out" / "metrics.jsonl")
    assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))
    resumed = [r["resumed_from"] for r in records if "resumed_from" in r]
    # Killed right after round 3, where it holds until the kill comes (faults.hold_after_round),
    # then resumed from its checkpoint exactly once: of round 3, or of round 2 if the kill caught
    # round 3's checkpoint being written (its record comes first).
    assert resumed in ([3], [2])
    others = read_records(out / "nodes" / "cleveland" / "out" / "metrics.jsonl")
    missed = [r["round"] for r in others if len(r["neighbours_reached"]) < 3]
    assert missed, "cleveland never missed va while it was down"


def test_a_partition_drives_the_halves_apart_and_healing_brings_them_back(run):
    out, _ = run
    distance = {c["round"]: c["distance"] for c in json.loads((out / "consensus.json").read_text())}
    before = distance[7]  # the last round before the partition (va is back since round 5)
    during = max(distance[r] for r in range(9, 12))
    after = distance[ROUNDS]
    print({r: round(d, 3) for r, d in distance.items()})
    assert during > before
    assert after < before


PAUSE_ROUNDS = 9
PAUSED = ("hungarian", 4, 6)  # frozen in rounds 4 to 6
PAUSE_SCENARIO = f"""
name = "pause-small"
rounds = {PAUSE_ROUNDS}

{SITES}
[topology]
kind = "full"

[timeouts]  # the others wait this long for the frozen node each round
connect_seconds = 1
fetch_seconds = 3

[baselines]
local_only = false
centralized = false
fedavg = false

# A slow node paces the rounds, so that the pause lands within a round of where it is put.
[[faults]]
kind = "slow"
node = "cleveland"
delay_seconds = 0.5

[[faults]]
kind = "pause"
node = "{PAUSED[0]}"
from = {PAUSED[1]}
to = {PAUSED[2]}
"""


def test_a_frozen_node_is_skipped_meanwhile_and_finishes_every_round_after_the_thaw(tmp_path):
    from sim.local_swarm import HEART_DISEASE

    name, start, end = PAUSED
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(PAUSE_SCENARIO.replace("{data}", str(HEART_DISEASE)))
    [summary] = run_scenario(scenario, tmp_path / "out", Console(quiet=True))
    out = tmp_path / "out"
    assert {"label": f"{name} frozen", "from": start, "to": end} in summary["fault_windows"]
    records = read_records(out / "nodes" / name / "out" / "metrics.jsonl")
    # Stopped and continued, never killed: every round once, none resumed from a checkpoint.
    assert [r["round"] for r in records] == list(range(1, PAUSE_ROUNDS + 1))
    assert not [r for r in records if "resumed_from" in r]
    assert len(records[-1]["neighbours_reached"]) == 3
    peer = peer_id_of(load_key_file(out / "nodes" / name / "identity.key"))
    for other in ("cleveland", "switzerland", "va"):
        reached = {r["round"]: r["neighbours_reached"] for r in metrics(out, other)}
        # Frozen once every node has finished round start - 1 (polled: it may land a round
        # late), thawed once the others have finished round `end`.
        assert peer in reached[start - 1], other
        assert all(peer not in reached[r] for r in range(start + 1, end + 1)), (other, reached)
        assert peer in reached[PAUSE_ROUNDS], other


INPROC = (
    """
name = "inproc-small"
backend = "inproc"
rounds = 6
"""
    + SITES
    + """
[topology]
kind = "ring"

[baselines]
local_only = true
"""
)


def test_inproc_runs_are_reproducible_from_the_seed(tmp_path):
    from sim.local_swarm import HEART_DISEASE

    scenario = tmp_path / "scenario.toml"
    scenario.write_text(INPROC.replace("{data}", str(HEART_DISEASE)))
    runs = [run_scenario(scenario, tmp_path / f"run{i}", Console(quiet=True))[0] for i in (1, 2)]
    for out in (tmp_path / "run1", tmp_path / "run2"):
        assert (out / "report.html").exists() and (out / "summary.json").exists()
    first, second = (
        {n: (v["accuracy"], v["auc"]) for n, v in run["nodes"].items()} for run in runs
    )
    assert first == second
    # The second run's local-only baseline comes from the cache the first one filled.
    assert runs[1]["baselines_cached_from"] is not None
    assert runs[1]["baselines"] == runs[0]["baselines"]
    assert runs[0]["mean"]["accuracy"] > 0.6
    for name in first:
        a = final_params(tmp_path / "run1", name)
        b = final_params(tmp_path / "run2", name)
        assert all(np.array_equal(a[k], b[k]) for k in a), name


def test_several_seeds_get_a_folder_each_and_a_significance_test(tmp_path):
    from sim.local_swarm import HEART_DISEASE

    scenario = tmp_path / "scenario.toml"
    text = INPROC.replace("{data}", str(HEART_DISEASE)).replace("rounds = 6", "rounds = 3")
    scenario.write_text(text.replace('backend = "inproc"', 'backend = "inproc"\nseeds = [0, 1]'))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("not a run: --replace must leave this folder alone")
    summaries = run_scenario(scenario, out, Console(quiet=True), replace=True)
    assert [s["seed"] for s in summaries] == [0, 1]
    for seed in (0, 1):
        assert (out / f"seed-{seed}" / "summary.json").exists()
    assert len(json.loads((out / "seeds.json").read_text())) == 2
    assert "paired t-test over 2 seeds" in (out / "report.md").read_text()
    assert (out / "notes.txt").exists()
    with pytest.raises(FileExistsError, match="already holds a run"):
        run_scenario(scenario, out, Console(quiet=True))
    run_scenario(scenario, out, Console(quiet=True), replace=True)  # the earlier run goes
    assert not (out / "notes.txt").exists() and (out / "seed-1" / "summary.json").exists()


def test_a_rotation_of_matchings_meets_one_neighbour_a_round_and_all_of_them_in_turn(tmp_path):
    from sim.local_swarm import HEART_DISEASE

    scenario = tmp_path / "scenario.toml"
    text = INPROC.replace("{data}", str(HEART_DISEASE))
    scenario.write_text(text.replace('kind = "ring"', 'kind = "full"\nschedule = "matchings"'))
    run_scenario(scenario, tmp_path / "out", Console(quiet=True))
    for name in ("cleveland", "hungarian", "switzerland", "va"):
        records = metrics(tmp_path / "out", name)
        assert [len(r["neighbours_reached"]) for r in records] == [1] * len(records)
        assert all(r["local"] is None for r in records)  # the simulator skips that evaluation
        met = {peer for r in records for peer in r["neighbours_reached"]}
        assert len(met) == 3, f"{name} met {len(met)} of its 3 neighbours in 6 rounds"


CHAINED = (
    """
name = "chained"
backend = "{backend}"
rounds = {rounds}
"""
    + SITES
    + """
[topology]
kind = "ring"

[chain]
backend = "{chain}"
rounds_per_epoch = 2

[baselines]
centralized = false
fedavg = false
"""
)

KILL_VA = """
[[faults]]
kind = "kill"
node = "va"
at = 2
restart = 4
"""


def run_chained(tmp_path, backend: str, chain: str, rounds: int, extra: str = ""):
    from sim.local_swarm import HEART_DISEASE

    text = CHAINED.format(backend=backend, chain=chain, rounds=rounds, data=HEART_DISEASE)
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(text + extra)
    [summary] = run_scenario(scenario, tmp_path / "out", Console(quiet=True))
    ledger = summary["ledger"]
    assert ledger["backend"] == chain and ledger["audit_ok"], ledger["findings"]
    assert ledger["finalized_epochs"] and ledger["models_checked"] > 0
    # Anvil alone keeps its state for a later audit; the others are gone with the run.
    assert ledger["audit_command"] is None
    assert (tmp_path / "out" / "audit").is_dir()
    assert 0 < sum(m["reward_wei"] for m in ledger["members"].values()) <= ledger["pool_wei"]
    return tmp_path / "out", summary


def test_inproc_kills_and_restarts_a_node_on_a_ganache_chain(tmp_path):
    out, summary = run_chained(tmp_path, "inproc", "ganache", rounds=7, extra=KILL_VA)
    records = read_records(out / "nodes" / "va" / "out" / "metrics.jsonl")
    assert [r["round"] for r in records] == list(range(1, 8))
    resumed = [r["resumed_from"] for r in records if "resumed_from" in r]
    assert resumed in ([2], [1])  # killed right after round 2 (see the process test above)
    # va's ring neighbours lost it while it was down, and had it back afterwards.
    for name in ("cleveland", "switzerland"):
        reached = [
            r["neighbours_reached"]
            for r in read_records(out / "nodes" / name / "out" / "metrics.jsonl")
        ]
        assert any(len(n) == 1 for n in reached) and len(reached[-1]) == 2, name
    assert summary["mean"]["accuracy"] > 0.6


def test_process_nodes_use_the_embedded_chain_the_simulator_serves(tmp_path):
    _, summary = run_chained(tmp_path, "process", "embedded", rounds=4)
    assert set(summary["ledger"]["members"]) == {"cleveland", "hungarian", "switzerland", "va"}


def test_nodes_shared_among_processes_train_exactly_as_in_one(tmp_path):
    """workers = 2: half the nodes in a worker process, each with its own host; the same
    models as when they all share the simulator's process."""
    from sim.local_swarm import HEART_DISEASE

    text = INPROC.replace("{data}", str(HEART_DISEASE)).replace("rounds = 6", "rounds = 4")
    runs = {}
    for workers in (1, 2):
        scenario = tmp_path / f"workers-{workers}.toml"
        scenario.write_text(text.replace("rounds = 4", f"rounds = 4\nworkers = {workers}"))
        [runs[workers]] = run_scenario(scenario, tmp_path / f"run{workers}", Console(quiet=True))
    assert len(runs[2]["peak_rss_mb_by_process"]) == 2  # the simulator and one worker
    assert (tmp_path / "run2" / "workers" / "worker-1.log").exists()
    for name in runs[1]["nodes"]:
        a = final_params(tmp_path / "run1", name)
        b = final_params(tmp_path / "run2", name)
        assert all(np.array_equal(a[k], b[k]) for k in a), name


def test_a_worker_that_never_gets_its_nodes_exits_when_the_run_fails_early(tmp_path):
    """Workers start before the run's data is made (their imports overlap it); a run that
    fails before handing them any node still leaves no process behind."""
    from sim.pool import spawn_workers, stop_unused

    [worker] = spawn_workers(tmp_path, 1)
    assert worker.poll() is None  # importing, then waiting for "configure"
    stop_unused([worker])
    assert worker.returncode == 0
    assert (tmp_path / "workers" / "worker-1.log").read_text() == ""


def test_a_node_in_a_worker_process_is_killed_and_resumes(tmp_path):
    from sim.local_swarm import HEART_DISEASE

    text = INPROC.replace("{data}", str(HEART_DISEASE)).replace("rounds = 6", "rounds = 7")
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(text.replace("rounds = 7", "rounds = 7\nworkers = 2") + KILL_VA)
    [summary] = run_scenario(scenario, tmp_path / "out", Console(quiet=True))
    # Spread by data size: cleveland (the largest) here, hungarian and then va in the worker.
    placement = json.loads((tmp_path / "out" / "workers" / "placement.json").read_text())
    assert placement["va"] == "worker-1" and placement["cleveland"] == "simulator"
    records = metrics(tmp_path / "out", "va")
    assert [r["round"] for r in records] == list(range(1, 8))
    assert [r["resumed_from"] for r in records if "resumed_from" in r] in ([2], [1])
    for name in ("cleveland", "switzerland"):  # va's ring neighbours lost it, then had it back
        reached = [r["neighbours_reached"] for r in metrics(tmp_path / "out", name)]
        assert any(len(n) == 1 for n in reached) and len(reached[-1]) == 2, name
    assert summary["mean"]["accuracy"] > 0.6


def test_nodes_scale_by_the_reference_instead_of_agreeing(tmp_path):
    from sim.local_swarm import HEART_DISEASE

    text = INPROC.replace("{data}", str(HEART_DISEASE)).replace("rounds = 6", "rounds = 2")
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(text.replace("[data]", "[data]\nreference_scaling = true", 1))
    [summary] = run_scenario(scenario, tmp_path / "out", Console(quiet=True))
    reference = json.loads((tmp_path / "out" / "data" / "scaling.json").read_text())
    for name in summary["nodes"]:
        node = tmp_path / "out" / "nodes" / name / "out"
        assert json.loads((node / "scaler.json").read_text()) == reference, name
        assert json.loads((node / "session.json").read_text())["members"] == []  # no agreement
        assert [r["round"] for r in metrics(tmp_path / "out", name)] == [1, 2]


COMMON_TEST = """
name = "common-test"
backend = "inproc"
rounds = 3

[data]
schema = "{data}/schema.toml"
validation_fraction = 0           # every record trains: all is scored on the test file
test_file = "{data}/processed.va.data"   # the fourth hospital, as an external test set

[data.sites]
cleveland = "{data}/processed.cleveland.data"
hungarian = "{data}/processed.hungarian.data"
switzerland = "{data}/processed.switzerland.data"

[topology]
kind = "full"

[baselines]
local_only = true
centralized = true
fedavg = true
"""


def test_every_node_the_consensus_and_every_baseline_are_scored_on_a_common_test_file(tmp_path):
    from sim.local_swarm import HEART_DISEASE

    scenario = tmp_path / "scenario.toml"
    scenario.write_text(COMMON_TEST.replace("{data}", str(HEART_DISEASE)))
    [summary] = run_scenario(scenario, tmp_path / "out", Console(quiet=True))
    out = tmp_path / "out"
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    test = summary["test"]
    assert summary["evaluated_on"] == "test"
    assert test["file"] == str(HEART_DISEASE / "processed.va.data")
    # 200 lines, one a duplicate, dropped by the schema's cleaning as at every node.
    assert test["rows"] == 199 and test["dropped"] == {"duplicate": 1}
    assert set(test["nodes"]) == {"cleveland", "hungarian", "switzerland"}
    for name, node in summary["nodes"].items():
        records = metrics(out, name)
        assert all(r["evaluated_on"] == "test" and r["merged"]["n"] == 199 for r in records)
        assert test["nodes"][name]["accuracy"] == node["accuracy"]  # no validation split
    # A complete graph and the default rule: every node ends with the same model (to float
    # rounding), and so is their row-weighted average, the consensus model.
    assert test["consensus"]["nodes"] == 3
    assert test["consensus"]["accuracy"] == pytest.approx(test["mean"]["accuracy"], abs=0.01)
    assert [r["round"] for r in test["per_round"]] == [1, 2, 3]
    for kind in ("local_only", "centralized", "fedavg"):
        on_test = summary["baselines"][kind]["test"]
        assert [r["round"] for r in on_test["per_round"]] == [1, 2, 3], kind
        assert 0.5 < on_test["accuracy"] <= 1.0 and on_test["auc"] is not None, kind
        assert summary["baselines"][kind]["mean_accuracy"] == pytest.approx(on_test["accuracy"]), (
            kind
        )  # each site's final model, on the test set too
    assert set(summary["baselines"]["local_only"]["test"]["per_node"]) == set(summary["nodes"])
    assert (
        test["fedavg_per_round"][-1]["accuracy"]
        == summary["baselines"]["fedavg"]["test"]["accuracy"]
    )
    assert (out / "test.png").read_bytes()[:4] == b"\x89PNG"
    assert "| consensus model |" in (out / "report.md").read_text()
