"""The ray backend on a Ray cluster of two raylets on this machine (`ray.cluster_utils.Cluster`:
a head and a worker node, one CPU each): four breast-cancer nodes spread over both, one killed
and restarted where it ran, a partition; the same scenario and seed on the process backend
lands on the same mean accuracy."""

import json

import pytest
from rich.console import Console

from gossip.identity import load_key_file, peer_id_of
from sim.run import run_scenario
from tests.integration.swarm_support import metrics

pytestmark = [pytest.mark.integration, pytest.mark.ray]

# Every fault is over by round 8 or so (the restarted node takes a few rounds to start and catch
# up): the last rounds run on every link, on both backends alike, so that how long a restart
# takes on each does not decide the final models.
ROUNDS = 12
KILLED = ("n03", 2, 3)  # killed after round 2, restarted once the others have finished 3
CUT_OFF = (["n00", "n01"], ["n02", "n03"], 5, 6)  # the halves apart in rounds 5 and 6
SCENARIO = f"""
name = "ray-faults"
backend = "ray"
rounds = {ROUNDS}

[data]
schema = "{{data}}/schema.toml"
file = "{{data}}/breast-cancer.csv"
split = "quantity"
nodes = 4
alpha = 2.0

[topology]
kind = "full"

[ray]
address = "{{address}}"
num_cpus = 0.5

[baselines]
local_only = false
centralized = false
fedavg = false

[[faults]]
kind = "kill"
node = "{KILLED[0]}"
at = {KILLED[1]}
restart = {KILLED[2]}

[[faults]]
kind = "partition"
groups = [{CUT_OFF[0]}, {CUT_OFF[1]}]
from = {CUT_OFF[2]}
to = {CUT_OFF[3]}
""".replace("'", '"')


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    small = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args=small)
    cluster.add_node(**small)
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The scenario on the Ray cluster, then on the process backend."""
    from sim.local_swarm import REPO_ROOT

    folder = tmp_path_factory.mktemp("ray")
    scenario = folder / "scenario.toml"
    text = SCENARIO.replace("{data}", str(REPO_ROOT / "data" / "breast-cancer"))
    scenario.write_text(text.replace("{address}", cluster.address))
    quiet = Console(quiet=True)
    [on_ray] = run_scenario(scenario, folder / "ray", quiet)
    [on_processes] = run_scenario(scenario, folder / "process", quiet, backend="process")
    print(
        f"mean accuracy ray {on_ray['mean']['accuracy']:.4f}, "
        f"process {on_processes['mean']['accuracy']:.4f}"
    )
    return folder, on_ray, on_processes


def test_ray_matches_the_process_backend_in_form_and_accuracy(runs):
    _, on_ray, on_processes = runs
    assert (on_ray["backend"], on_processes["backend"]) == ("ray", "process")
    assert set(on_ray) == set(on_processes)
    assert set(on_ray["nodes"]) == {"n00", "n01", "n02", "n03"}
    for name, node in on_ray["nodes"].items():
        assert set(node) == set(on_processes["nodes"][name])
    assert on_ray["mean"]["accuracy"] > 0.85
    gap = abs(on_ray["mean"]["accuracy"] - on_processes["mean"]["accuracy"])
    assert gap <= 0.01, (on_ray["mean"], on_processes["mean"])


def test_nodes_ran_on_both_raylets_and_the_restart_where_the_node_was(runs, cluster):
    folder, _, _ = runs
    raylets = {node.node_id for node in cluster.list_all_nodes()}
    placed = json.loads((folder / "ray" / "ray.json").read_text())["nodes"]
    assert len(raylets) == 2
    assert {p["ray_node"] for p in placed.values()} == raylets
    assert [placed[n]["starts"] for n in sorted(placed)] == [1, 1, 1, 2]
    for name, place in placed.items():
        config = (folder / "ray" / "nodes" / name / "node.toml").read_text()
        assert f'listen = "/ip4/{place["ip"]}/tcp/{place["port"]}"' in config


def test_every_node_finishes_and_the_killed_one_resumes_from_its_checkpoint(runs):
    folder, _, _ = runs
    out = folder / "ray"
    for name in ("n00", "n01", "n02", "n03"):
        assert [r["round"] for r in metrics(out, name)] == list(range(1, ROUNDS + 1)), name
        assert (
            "rounds, merged validation accuracy" in (out / "nodes" / name / "node.log").read_text()
        )
    name, at, _ = KILLED
    resumed = [r["resumed_from"] for r in metrics(out, name) if "resumed_from" in r]
    assert resumed in ([at], [at - 1])  # held after round `at` till killed (see test_sim)
    peer = peer_id_of(load_key_file(out / "nodes" / name / "identity.key"))
    missed = [r["round"] for r in metrics(out, "n00") if peer not in r["neighbours_reached"]]
    assert missed, "n00 never missed the killed node while it was down"


def test_the_partition_cuts_the_halves_apart_in_its_rounds_and_they_heal(runs):
    folder, _, _ = runs
    out = folder / "ray"
    left, right, start, end = CUT_OFF
    peers = {n: peer_id_of(load_key_file(out / "nodes" / n / "identity.key")) for n in left + right}
    for name, others in [(n, right) for n in left] + [(n, left) for n in right]:
        records = metrics(out, name)
        reached = {r["round"]: r["neighbours_reached"] for r in records}
        failures = {r["round"]: r["failures"] for r in records}
        for r in range(start, end + 1):
            for other in others:
                assert peers[other] not in reached[r], (name, r, other)
                assert failures[r][peers[other]] == "unreachable (simulated partition)", (name, r)
        # Healed: each has the other side back (a fetch may still time out on a loaded machine).
        # A partition is judged by the round of the snapshot asked for: judged by the round
        # the server was still finishing, the side out of the window first stayed refused.
        # Not asked of the restarted node: on a machine loaded enough its new actor can take
        # longer to start than the others take to finish (seen with two busy loops on two cores).
        if name == KILLED[0]:
            continue
        later = range(end + 1, ROUNDS + 1)
        for other in (o for o in others if o != KILLED[0]):
            assert any(peers[other] in reached[r] for r in later), (name, other, reached)


def test_an_actor_that_cannot_read_its_node_folder_fails_the_run_at_placement(cluster, tmp_path):
    from sim.errors import SimError
    from sim.local_swarm import HEART_DISEASE, HEART_SITES, init_swarm
    from sim.ray_backend import RayNodes
    from sim.scenario import RaySection

    sites = {n: HEART_DISEASE / HEART_SITES[n] for n in ("cleveland", "va")}
    init_swarm(tmp_path, sites, HEART_DISEASE / "schema.toml", rounds=2, topology="full")
    (tmp_path / "nodes" / "va" / "node.toml").unlink()  # as on a machine without the folder
    settings = RaySection(address=cluster.address, num_cpus=0.5)
    with (
        pytest.raises(
            SimError, match=r"every machine of the cluster must see the run folder"
        ) as err,
        RayNodes(tmp_path, list(sites), {}, settings),
    ):
        pass
    assert f"va on {cluster.head_node.node_ip_address}: no file {tmp_path}" in str(err.value)
    assert "cleveland" not in str(err.value)
