"""The docker backend without an engine: container configs, mounts, partitions as cuts,
subnets, and that leaving a run removes everything it labelled, paused containers too (with a
fake client)."""

import ipaddress
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from docker.errors import APIError, NotFound

from node.init import render_config
from sim.docker_backend import Cut, DockerNodes, container_config, cuts_of, mounts
from sim.docker_env import LABEL, DockerError, DockerSwarm, pick_subnet
from sim.local_swarm import init_swarm
from sim.run import with_backend
from sim.scenario import ScenarioError, load_scenario
from tests.unit.sim.test_scenario import BASE, HEART, PARTITION, write

PEERS = {"12D3KooWA": "10.213.7.10", "12D3KooWB": "10.213.7.11", "12D3KooWC": "10.213.7.12"}


def host_config(ledger: bool) -> str:
    return render_config(
        name="cleveland",
        key_file="identity.key",
        listen="/ip4/127.0.0.1/tcp/40001",
        neighbours=[
            "/ip4/127.0.0.1/tcp/40002/p2p/12D3KooWB",
            "/ip4/127.0.0.1/tcp/40003/p2p/12D3KooWC",
        ],
        output_dir="out",
        data="/runs/r/data/cleveland.csv",
        schema="/repo/data/heart-disease/schema.toml",
        ledger_contract="0x" + "ab" * 20 if ledger else "",
        ledger_key_file="eth.key" if ledger else "",
    )


def test_the_container_config_names_only_paths_inside_the_container():
    cfg = tomllib.loads(container_config(host_config(ledger=False), PEERS))
    assert cfg["node"]["key_file"] == "/keys/identity.key"
    assert cfg["node"]["listen"] == "/ip4/0.0.0.0/tcp/4001"
    assert cfg["node"]["output_dir"] == "/state"
    assert cfg["node"]["neighbours"] == [
        "/ip4/10.213.7.11/tcp/4001/p2p/12D3KooWB",
        "/ip4/10.213.7.12/tcp/4001/p2p/12D3KooWC",
    ]
    assert cfg["data"] == {**cfg["data"], "path": "/data/cleveland.csv"}
    assert cfg["data"]["schema"] == "/data/schema.toml"
    assert cfg["ledger"]["enabled"] is False
    assert "key_file" not in cfg["ledger"]


def test_with_the_ledger_the_container_config_names_the_mounted_key_and_the_chain():
    text = container_config(host_config(ledger=True), PEERS, "http://10.213.7.2:8545")
    cfg = tomllib.loads(text)
    assert cfg["ledger"]["key_file"] == "/keys/eth.key"
    assert cfg["ledger"]["chain"] == "http://10.213.7.2:8545"
    assert text.startswith("# medswarm node configuration")  # the comments stay


def test_a_node_mounts_only_its_own_files(tmp_path: Path):
    node_dir = tmp_path / "nodes" / "va"
    node_dir.mkdir(parents=True)
    (node_dir / "identity.key").write_bytes(b"k")
    data, schema = tmp_path / "data" / "va.csv", tmp_path / "schema.toml"
    binds = mounts(node_dir, data, schema)
    assert {v["bind"]: v["mode"] for v in binds.values()} == {
        "/data/va.csv": "ro",
        "/data/schema.toml": "ro",
        "/config/node.toml": "ro",
        "/keys/identity.key": "ro",  # no eth.key here: none is mounted
        "/state": "rw",
    }
    assert binds[str(node_dir / "out")]["bind"] == "/state"
    test = tmp_path / "data" / "test-set" / "test.parquet"
    binds = mounts(node_dir, data, schema, test)
    assert binds[str(test)] == {"bind": "/data/test-set/test.parquet", "mode": "ro"}


def test_a_common_test_set_is_named_where_it_is_mounted():
    text = host_config(ledger=False).replace(
        "validation_fraction",
        'test_path = "/runs/r/data/test-set/test.parquet"\nvalidation_fraction',
    )
    cfg = tomllib.loads(container_config(text, PEERS))
    assert cfg["data"]["test_path"] == "/data/test-set/test.parquet"
    assert "test_path" not in tomllib.loads(container_config(host_config(False), PEERS))["data"]


def test_partitions_become_cuts_that_keep_the_largest_group_connected(tmp_path: Path):
    groups = '["cleveland", "hungarian", "va"], ["switzerland"]'
    scenario = load_scenario(write(tmp_path, BASE + PARTITION.format(groups)))
    assert cuts_of(scenario) == [Cut(("switzerland",), 5, 8)]
    halves = '["cleveland", "hungarian"], ["switzerland", "va"]'
    scenario = load_scenario(write(tmp_path, BASE + PARTITION.format(halves)))
    assert cuts_of(scenario) == [Cut(("switzerland", "va"), 5, 8)]


def test_the_docker_backend_takes_anvil_or_no_chain(tmp_path: Path):
    path = write(tmp_path, BASE.replace("rounds = 20", 'rounds = 20\nbackend = "docker"'))
    assert load_scenario(path).backend == "docker"
    ganache = BASE + '\n[chain]\nbackend = "ganache"\n'
    with pytest.raises(ScenarioError, match="cannot run with backend = 'docker'"):
        load_scenario(
            write(tmp_path, ganache.replace("rounds = 20", 'rounds = 20\nbackend = "docker"'))
        )
    scenario = load_scenario(write(tmp_path, ganache))
    with pytest.raises(ScenarioError, match="chain.backend: 'ganache'"):
        with_backend(scenario, "docker")
    with pytest.raises(ScenarioError, match="unknown backend 'vm'"):
        with_backend(scenario, "vm")
    assert with_backend(scenario, "inproc").backend == "inproc"


def test_subnets_in_use_are_skipped():
    taken = [ipaddress.IPv4Network("10.213.0.0/23"), ipaddress.IPv4Network("10.213.3.7/32")]
    found = list(pick_subnet(taken, start=0))
    assert found[:2] == ["10.213.2.0/24", "10.213.4.0/24"]
    assert len(found) == 256 - 3


# -- cleanup, with a fake engine --------------------------------------------------------------


class FakeObject:
    """A container or a network; a container refuses, as engines before 17.06 did, to be
    signalled or removed while it is paused."""

    def __init__(self, engine: "FakeEngine", kind: str, name: str, labels: dict[str, str]):
        self.engine, self.kind, self.name, self.labels = engine, kind, name, labels
        self.id, self.status = name, "created"

    def _do(self, action: str, allowed: tuple[str, ...], status: str | None = None) -> None:
        if self.status not in allowed:
            raise APIError(f"cannot {action} container {self.name}: it is {self.status}")
        self.engine.calls.append((self.name, action))
        self.status = status or self.status

    def start(self) -> None:
        self._do("start", ("created", "exited"), "running")

    def pause(self) -> None:
        self._do("pause", ("running",), "paused")

    def unpause(self) -> None:
        self._do("unpause", ("paused",), "running")

    def kill(self, signal: str = "SIGKILL") -> None:
        self._do(f"kill {signal}", ("running",), "exited")

    def reload(self) -> None:
        if self not in self.engine.objects:
            raise NotFound("gone")

    def remove(self, force: bool = False) -> None:
        if self not in self.engine.objects:
            raise NotFound("gone")
        self._do("remove", ("created", "running", "exited") if force else ("created", "exited"))
        self.engine.objects.remove(self)


class FakeCollection:
    def __init__(self, engine: "FakeEngine", kind: str) -> None:
        self.engine, self.kind = engine, kind

    def create(self, *args: Any, name: str, labels: dict[str, str], **kwargs: Any) -> FakeObject:
        if self.engine.fail_on == name:
            raise DockerError(f"cannot create {name}")
        made = FakeObject(self.engine, self.kind, name, labels)
        self.engine.objects.append(made)
        return made

    def list(self, all: bool = False, filters: dict[str, str] | None = None) -> list[FakeObject]:
        key, _, value = (filters or {})["label"].partition("=")
        return [
            o for o in self.engine.objects if o.kind == self.kind and o.labels.get(key) == value
        ]


class FakeEngine:
    def __init__(self, fail_on: str = "") -> None:
        self.objects: list[FakeObject] = []
        self.calls: list[tuple[str, str]] = []  # (object name, what was done to it)
        self.fail_on = fail_on
        self.containers = FakeCollection(self, "container")
        self.networks = FakeCollection(self, "network")
        self.api = SimpleNamespace(_version="1.41")


def test_leaving_a_run_removes_what_it_created_and_nothing_else():
    engine = FakeEngine()
    other = engine.containers.create(name="someone-elses", labels={LABEL: "other"})
    with DockerSwarm(engine, "abc") as swarm:  # type: ignore[arg-type]
        engine.networks.create(name=swarm.name("net"), labels=swarm.labels)
        engine.containers.create(name=swarm.name("va"), labels=swarm.labels)
        assert len(engine.objects) == 3
    assert engine.objects == [other]


@pytest.mark.parametrize("stop", [RuntimeError("a node failed"), KeyboardInterrupt()])
def test_a_failure_or_ctrl_c_inside_a_run_still_removes_everything(stop: BaseException):
    engine = FakeEngine()
    with pytest.raises(type(stop)), DockerSwarm(engine, "abc") as swarm:  # type: ignore[arg-type]
        engine.networks.create(name=swarm.name("net"), labels=swarm.labels)
        engine.containers.create(name=swarm.name("va"), labels=swarm.labels)
        raise stop
    assert engine.objects == []


def test_a_paused_container_is_unpaused_before_it_is_removed():
    engine = FakeEngine()
    with DockerSwarm(engine, "abc") as swarm:  # type: ignore[arg-type]
        node = engine.containers.create(name=swarm.name("va"), labels=swarm.labels)
        node.start()
        node.pause()
    assert engine.objects == []
    assert engine.calls[-2:] == [(node.name, "unpause"), (node.name, "remove")]


def test_nodes_are_paused_and_resumed_and_unpaused_before_they_are_stopped(tmp_path: Path):
    names = ["cleveland", "va"]
    sites = {n: HEART / f"processed.{n}.data" for n in names}
    init_swarm(tmp_path, sites, HEART / "schema.toml", rounds=2)
    engine = FakeEngine()
    with DockerSwarm(engine, "abc") as swarm:  # type: ignore[arg-type]
        network = engine.networks.create(name=swarm.name("net"), labels=swarm.labels)
        swarm.network = network  # type: ignore[assignment]
        swarm.subnet = ipaddress.IPv4Network("10.213.7.0/24")
        nodes = DockerNodes(swarm, tmp_path, names, None)
        try:
            for n in names:
                nodes.start(n)
            va = nodes.containers["va"]
            nodes.pause("va")
            assert va.status == "paused" and nodes.running("va")
            nodes.resume("va")
            assert va.status == "running"
            nodes.pause("va")
            nodes.stop_all(grace=0)
        finally:
            nodes.memory.stop()
    assert [action for name, action in engine.calls if name == va.name] == [
        "start",
        "pause",
        "unpause",
        "pause",
        "unpause",  # a paused container is thawed first, so that SIGTERM stops it cleanly
        "kill SIGTERM",
        "remove",
    ]
    assert engine.objects == []
