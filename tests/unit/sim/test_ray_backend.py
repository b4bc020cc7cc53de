"""The ray backend without a cluster: node configs rewritten for the placement, the loopback
chain check, and Ray imported only by the ray backend."""

import subprocess
import sys

import pytest

from gossip.identity import load_key_file, peer_id_of
from node.config import load_config
from sim.errors import SimError
from sim.local_swarm import HEART_DISEASE, HEART_SITES, REPO_ROOT, init_swarm
from sim.ray_backend import Placement, RayNodes
from sim.scenario import RaySection


@pytest.fixture
def swarm(tmp_path):
    sites = {n: HEART_DISEASE / f for n, f in HEART_SITES.items()}
    init_swarm(tmp_path, sites, HEART_DISEASE / "schema.toml", rounds=2, topology="ring")
    return tmp_path, list(sites)


def placed(folder, names, overrides=None) -> RayNodes:
    """RayNodes as if the actors had landed on four machines, 10.0.0.1 to 10.0.0.4."""
    nodes = RayNodes(folder, names, overrides or {}, RaySection())
    for i, name in enumerate(names):
        nodes.places[name] = Placement(f"raylet-{i}", f"10.0.0.{i + 1}", 5000 + i)
    return nodes


def test_each_config_listens_on_its_machine_and_dials_its_neighbours_at_theirs(swarm):
    folder, names = swarm
    peers = {peer_id_of(load_key_file(folder / "nodes" / n / "identity.key")): n for n in names}
    before = {n: load_config(folder / "nodes" / n / "node.toml").node for n in names}
    nodes = placed(folder, names)
    nodes._write_addresses()
    for i, name in enumerate(names):
        cfg = load_config(folder / "nodes" / name / "node.toml").node
        assert cfg.listen == f"/ip4/10.0.0.{i + 1}/tcp/{5000 + i}"
        assert len(cfg.neighbours) == len(before[name].neighbours) == 2  # a ring
        for old, new in zip(before[name].neighbours, cfg.neighbours, strict=True):
            peer = old.rsplit("/p2p/", 1)[1]
            place = nodes.places[peers[peer]]
            assert new == f"/ip4/{place.ip}/tcp/{place.port}/p2p/{peer}"


def test_a_chain_on_this_machines_loopback_refuses_nodes_on_other_machines(swarm):
    folder, names = swarm
    local = placed(folder, names, {"ledger.chain": "http://127.0.0.1:8545"})
    with pytest.raises(SimError, match=r"the chain at http://127.0.0.1:8545 serves this machine"):
        local._check_chain_reachable()
    placed(folder, names)._check_chain_reachable()  # no chain
    placed(folder, names, {"ledger.chain": "http://10.0.0.9:8545"})._check_chain_reachable()


def test_only_the_ray_backend_imports_ray():
    code = (
        "import sys, sim.run, node.runner, medswarm.cli\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
