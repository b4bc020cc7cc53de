"""The `docker` backend: one container per node on the run's internal network.

Each node runs the node image's `medswarm node run` with a config written for the inside of its
container (`nodes/<name>/container.toml`, mounted at /config/node.toml): its records and the
schema under /data, its keys under /keys (all read-only, and only its own), its outputs in
/state, which is the host's `nodes/<name>/out`, so the simulator reads them where the other
backends leave them. Neighbours are dialled at their containers' static addresses.

Faults are done to the containers: a kill is `docker kill` (SIGKILL), a restart starts the same
container again (the node resumes from its checkpoint in /state), a pause is `docker pause`
(the cgroup freezer: memory and connections kept, nothing runs), a partition disconnects
containers from the network and connects them again with the same address.
"""

import json
import os
import threading
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from docker.errors import DockerException, NotFound
from docker.models.containers import Container

from node.init import PEER_KEYS_FILE, with_settings
from sim.docker_env import NODE_PORT, DockerError, DockerSwarm, describe, logs, node_image
from sim.scenario import PartitionFault, Scenario

CONTAINER_UID = 10001  # the node image's user
CONFIG = "container.toml"
KEYS = {
    "identity.key": "/keys/identity.key",
    "x25519.key": "/keys/x25519.key",
    "eth.key": "/keys/eth.key",
}
PEER_KEYS = "/keys/peer-keys.json"  # the members' public keys (without the ledger)
TEST_DIR = "/data/test-set"  # the common test set (data.test_path), if the scenario has one
MEMORY_POLL_SECONDS = 0.5


class Links(Protocol):
    """Nodes whose network links can be cut and healed for real."""

    def cut(self, name: str) -> None: ...
    def heal(self, name: str) -> None: ...


@dataclass(frozen=True)
class Cut:
    """Containers disconnected from the network for the rounds [from_round, to_round]."""

    nodes: tuple[str, ...]
    from_round: int
    to_round: int


def cuts_of(scenario: Scenario) -> list[Cut]:
    """The scenario's partitions as disconnections: a container is on the network or not, so
    the largest group stays connected and every node of the other groups is cut off (from
    its own group too; a group of one is exactly the partition the scenario asks for)."""
    cuts = []
    for fault in scenario.faults:
        if isinstance(fault, PartitionFault):
            rest = sorted(fault.groups, key=len, reverse=True)[1:]
            nodes = tuple(n for group in rest for n in group)
            cuts.append(Cut(nodes, fault.from_round, fault.to_round))
    return cuts


def container_config(text: str, peer_ips: Mapping[str, str], chain_url: str | None = None) -> str:
    """The node config `text` (as `init_swarm` wrote it for this host) rewritten for the
    inside of a container: paths under /data, /keys and /state, listening on every interface,
    neighbours at their containers' addresses (`peer_ips`: peer ID -> IP)."""
    raw = tomllib.loads(text)
    neighbours = []
    for addr in raw["node"].get("neighbours", []):
        peer = addr.rsplit("/p2p/", 1)[1]
        neighbours.append(f"/ip4/{peer_ips[peer]}/tcp/{NODE_PORT}/p2p/{peer}")
    settings: dict[str, Any] = {
        "node.key_file": KEYS["identity.key"],
        "node.x25519_key_file": KEYS["x25519.key"],
        "node.listen": f"/ip4/0.0.0.0/tcp/{NODE_PORT}",
        "node.neighbours": neighbours,
        "node.output_dir": "/state",
        "data.path": f"/data/{Path(raw['data']['path']).name}",
        "data.schema": "/data/schema.toml",
    }
    if raw["data"].get("test_path"):  # in a folder of its own: a node may be named "test"
        settings["data.test_path"] = f"{TEST_DIR}/{Path(raw['data']['test_path']).name}"
    if raw["node"].get("peer_keys"):
        settings["node.peer_keys"] = PEER_KEYS
    ledger = raw.get("ledger", {})
    if ledger.get("enabled"):
        settings["ledger.key_file"] = KEYS["eth.key"]
        if chain_url:
            settings["ledger.chain"] = chain_url
    return with_settings(text, settings)


def mounts(
    node_dir: Path, data: Path, schema: Path, test: Path | None = None
) -> dict[str, dict[str, str]]:
    """The node's own files only: its records, the schema, the common test set if any, its
    keys, its config, its outputs."""
    binds = {
        str(data.resolve()): {"bind": f"/data/{data.name}", "mode": "ro"},
        str(schema.resolve()): {"bind": "/data/schema.toml", "mode": "ro"},
        str(node_dir / CONFIG): {"bind": "/config/node.toml", "mode": "ro"},
        str(node_dir / "out"): {"bind": "/state", "mode": "rw"},
    }
    if test is not None:
        binds[str(test.resolve())] = {"bind": f"{TEST_DIR}/{test.name}", "mode": "ro"}
    for key, inside in KEYS.items():
        if (node_dir / key).exists():
            binds[str(node_dir / key)] = {"bind": inside, "mode": "ro"}
    peer_keys = node_dir.parent.parent / PEER_KEYS_FILE
    if peer_keys.exists():
        binds[str(peer_keys)] = {"bind": PEER_KEYS, "mode": "ro"}
    return binds


class DockerNodes:
    """The `Nodes` of `sim.backends` (and `Links`) as containers of one `DockerSwarm`."""

    def __init__(
        self, swarm: DockerSwarm, folder: Path, names: Sequence[str], chain_url: str | None
    ) -> None:
        self.swarm, self.folder, self.names = swarm, folder, list(names)
        self.ips = {n: swarm.node_ip(i) for i, n in enumerate(self.names)}
        self.containers: dict[str, Container] = {}
        self.killed: set[str] = set()
        self.start_seconds: dict[str, list[float]] = {n: [] for n in self.names}
        self.memory = MemoryWatch()
        # As root, the node image's own user writes /state and reads the keys; otherwise the
        # container runs as the caller, who owns them already.
        self.user = None if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"
        self._write_configs(chain_url)

    def _node_dir(self, name: str) -> Path:
        return self.folder / "nodes" / name

    def _write_configs(self, chain_url: str | None) -> None:
        from gossip.identity import load_key_file, peer_id_of

        peers = {
            peer_id_of(load_key_file(self._node_dir(n) / "identity.key")): self.ips[n]
            for n in self.names
        }
        for n in self.names:
            node_dir = self._node_dir(n)
            text = (node_dir / "node.toml").read_text()
            (node_dir / CONFIG).write_text(container_config(text, peers, chain_url))
            (node_dir / "out").mkdir(exist_ok=True)
            if self.user is None:
                for path in (node_dir / "out", *(node_dir / k for k in KEYS)):
                    if path.exists():
                        os.chown(path, CONTAINER_UID, CONTAINER_UID)

    # -- Nodes ----------------------------------------------------------------------------------

    def start(self, name: str) -> None:
        began = time.perf_counter()
        try:
            if name in self.containers:
                self.containers[name].start()  # the same container: it resumes from /state
            else:
                self.containers[name] = self._create(name)
                self.containers[name].start()
        except DockerException as exc:
            raise DockerError(f"could not start the container of node {name}: {exc}") from None
        self.start_seconds[name].append(time.perf_counter() - began)
        self.memory.watch(name, self.containers[name].id)
        self.killed.discard(name)

    def _create(self, name: str) -> Container:
        node_dir = self._node_dir(name)
        cfg = tomllib.loads((node_dir / "node.toml").read_text())
        network = self.swarm.network
        assert network is not None
        return self.swarm.client.containers.create(
            node_image(),
            command=["node", "run", "--config", "/config/node.toml", "--quiet"],
            name=self.swarm.name(name),
            labels={**self.swarm.labels, "medswarm.role": "node", "medswarm.node": name},
            network=network.name,
            networking_config=self.swarm.endpoint(self.ips[name]),
            volumes=mounts(
                node_dir,
                Path(cfg["data"]["path"]),
                Path(cfg["data"]["schema"]),
                Path(cfg["data"]["test_path"]) if cfg["data"].get("test_path") else None,
            ),
            environment={"PYTHONUNBUFFERED": "1"},
            user=self.user,
            init=True,  # Python as PID 1 would ignore SIGTERM; docker-init passes it on
        )

    def kill(self, name: str) -> None:
        self.containers[name].kill()
        self.containers[name].wait()
        self.killed.add(name)

    def pause(self, name: str) -> None:
        self.containers[name].pause()

    def resume(self, name: str) -> None:
        self.containers[name].unpause()

    def running(self, name: str) -> bool:
        container = self.containers[name]
        container.reload()
        return container.status in ("running", "paused", "restarting")

    def failures(self) -> dict[str, str]:
        failed = {}
        for n, container in self.containers.items():
            container.reload()
            code = container.attrs["State"]["ExitCode"]
            if code and n not in self.killed:
                failed[n] = (
                    f"container {container.name}: {describe(container.attrs)}; its last log "
                    f"lines:\n{logs(container)}\n(all of it in {self._node_dir(n) / 'node.log'})"
                )
        return failed

    def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM to every running container at once, SIGKILL to those still up after
        `grace` seconds (`docker stop` would wait for each in turn)."""
        up = [c for c in self.containers.values() if _status(c) in ("running", "paused")]
        for container in up:
            if container.status == "paused":  # engines before 17.06 refuse to signal it
                container.unpause()
            container.kill(signal="SIGTERM")
        deadline = time.monotonic() + grace
        for container in up:
            while _status(container) == "running" and time.monotonic() < deadline:
                time.sleep(0.2)
            if container.status == "running":
                container.kill()

    # -- Links ----------------------------------------------------------------------------------

    def cut(self, name: str) -> None:
        assert self.swarm.network is not None
        self.swarm.network.disconnect(self.containers[name], force=True)

    def heal(self, name: str) -> None:
        assert self.swarm.network is not None
        self.swarm.network.connect(self.containers[name], ipv4_address=self.ips[name])

    # -- after the run --------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Save each container's log as nodes/<name>/node.log, give the outputs back to the
        caller, and return what the run's docker.json keeps about the containers."""
        self.memory.stop()
        for n, container in self.containers.items():
            try:
                (self._node_dir(n) / "node.log").write_bytes(container.logs())
            except DockerException as exc:
                (self._node_dir(n) / "node.log").write_text(f"(log unavailable: {exc})\n")
        if self.user is None:
            for n in self.names:
                _chown_tree(self._node_dir(n), os.getuid(), os.getgid())
        return {
            n: {
                "container": self.swarm.name(n),
                "ip": self.ips[n],
                "start_seconds": self.start_seconds[n],
                "memory_peak_mb": self.memory.peak_mb.get(n),
            }
            for n in self.names
        }


def _status(container: Container) -> str:
    try:
        container.reload()
    except NotFound:
        return "removed"
    return str(container.status)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in [dirpath, *(os.path.join(dirpath, f) for f in dirnames + filenames)]:
            os.chown(entry, uid, gid, follow_symlinks=False)


class MemoryWatch:
    """Each container's peak memory, read from its memory cgroup while it runs (the cgroup is
    gone once the container stops, so it is polled)."""

    ROOTS = (
        Path("/sys/fs/cgroup/memory/docker/{id}/memory.max_usage_in_bytes"),  # cgroup v1
        Path("/sys/fs/cgroup/docker/{id}/memory.peak"),  # v2, cgroupfs driver
        Path("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.peak"),  # v2, systemd
    )

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.peak_mb: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, name: str, container_id: str) -> None:
        self.ids[name] = container_id
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(MEMORY_POLL_SECONDS):
            for name, cid in list(self.ids.items()):
                for template in self.ROOTS:
                    try:
                        value = int(Path(str(template).format(id=cid)).read_text())
                    except (OSError, ValueError):
                        continue
                    mb = value / 2**20
                    self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), mb)
                    break


def write_record(folder: Path, swarm: DockerSwarm, nodes: dict[str, Any], **extra: Any) -> None:
    """docker.json: the run's id, network, images and per-node container facts."""
    record = {
        "run_id": swarm.run_id,
        "network": swarm.network.name if swarm.network else None,
        "subnet": str(swarm.subnet) if swarm.subnet else None,
        "chain_ip": swarm.chain_ip if swarm.chain_container else None,
        "nodes": nodes,
        **extra,
    }
    (folder / "docker.json").write_text(json.dumps(record, indent=1))
