"""The `ray` backend: every node a Ray actor, placed on the machines of a Ray cluster.

Each actor runs the node's own code (`node.runner.NodeRunner` from its config file, as the
inproc backend does) in a trio loop of its own, in a Ray worker process of its own, with its
libp2p host listening on its machine's address. The node configs are written before anything
is placed, so placement comes first: the actors are spread over the cluster (Ray's SPREAD
strategy), each reports its machine's address and a free port there, and only then are the
configs given their `node.listen` and their neighbours' multiaddrs and the nodes started.

A kill is `ray.kill` of the actor: its worker process dies, and its host's sockets with it. A
restart is a new actor on the same Ray node, so the address its neighbours dial stays right, and
the node resumes from its checkpoint. Ray cannot freeze an actor: the scenario refuses pauses.

The run folder is used in place: the actors read their configs, keys and data and write their
outputs in it, and the supervisor reads their metrics there. Across machines it must be on a
filesystem that every machine mounts at the same path, with the scenario's data files and the
same medswarm install; an actor that cannot read its node's files fails the run at placement,
naming its machine and what it could not read.
"""

import ipaddress
import json
import logging
import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from gossip.identity import load_key_file, peer_id_of
from node.config import load_config
from node.errors import ConfigError
from node.init import with_settings
from sim.local_swarm import SwarmError
from sim.scenario import RaySection

PLACE_SECONDS = 120.0  # worker processes start slowly on a loaded machine
KILL_SECONDS = 30.0
# The nodes exchange models over libp2p, not through Ray's object store: keep a local
# instance's store at Ray's minimum instead of a share of the machine's memory.
LOCAL_OBJECT_STORE_BYTES = 80 * 1024**2
RECORD = "ray.json"


@dataclass(frozen=True)
class Location:
    """Where an actor landed, and whether it can read its node's files there."""

    ray_node: str  # the Ray node (raylet) the actor runs on
    ip: str  # that machine's address, the one the node listens on
    unreadable: str | None  # why it cannot read its node's files, if it cannot


class NodeActor:
    """One node in a Ray worker process of its own (`ray.remote` makes the actor class)."""

    def __init__(self, node_dir: str) -> None:
        self.node_dir = Path(node_dir)
        self.config = self.node_dir / "node.toml"

    def locate(self) -> Location:
        ip = ray.util.get_node_ip_address()
        unreadable = None
        if not self.config.is_file():
            unreadable = f"no file {self.config}"
        else:
            try:
                cfg = load_config(self.config)
                load_key_file(cfg.node.key_file)
            except (ConfigError, OSError) as exc:
                unreadable = str(exc)
        return Location(ray.get_runtime_context().get_node_id(), ip, unreadable)

    def free_port(self, ip: str) -> int:
        with socket.socket() as s:
            s.bind((ip, 0))
            return int(s.getsockname()[1])

    def run(self, overrides: Sequence[str]) -> str | None:
        """Run the node to its last round; what went wrong, if anything (the log has more)."""
        import torch
        import trio

        from node.runner import NodeRunner

        torch.set_num_threads(1)  # the actor's share of the machine is a fraction of a core
        log = logging.FileHandler(self.node_dir / "node.log")  # as `medswarm node run` logs
        log.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        logging.getLogger().addHandler(log)
        logging.getLogger().setLevel(logging.WARNING)
        try:
            cfg = load_config(self.config, list(overrides))
            summary = trio.run(NodeRunner(cfg).run)
        except Exception as exc:  # reported to the supervisor, which fails the run
            logging.getLogger(__name__).exception("node failed")
            return f"{type(exc).__name__}: {exc}"
        if final := summary["final"]:  # the line `medswarm node run` ends with
            on = "test-set" if final.get("evaluated_on") == "test" else "validation"
            with open(self.node_dir / "node.log", "a") as out:
                out.write(
                    f"{cfg.node.name}: {summary['rounds']} rounds, merged {on} accuracy "
                    f"{final['merged']['accuracy']:.3f}; outputs in {cfg.node.output_dir}\n"
                )
        return None


RemoteNode = ray.remote(NodeActor)


@dataclass
class Placement:
    """A node's place for the whole run: a restart comes back to it."""

    ray_node: str
    ip: str
    port: int
    starts: int = 0


class RayNodes:
    """The `Nodes` of `sim.backends` as actors on a Ray cluster; a context manager that
    connects to the cluster (or starts a local instance) and leaves it at the end."""

    def __init__(
        self,
        folder: Path,
        names: Sequence[str],
        overrides: Mapping[str, Any],
        settings: RaySection,
    ) -> None:
        self.folder, self.names, self.settings = folder, list(names), settings
        self.overrides = overrides
        self.flags = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]  # as the CLI
        self.actors: dict[str, Any] = {}
        self.runs: dict[str, Any] = {}  # name -> the ObjectRef of its actor's `run`
        self.places: dict[str, Placement] = {}
        self.killed: set[str] = set()

    def __enter__(self) -> "RayNodes":
        address = self.settings.address
        if address is None:
            ray.init(
                address="local",
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                include_dashboard=False,
                log_to_driver=False,  # the nodes log to their node.log
                logging_level=logging.WARNING,
            )
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        try:
            self.place()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self.stop_all()
            self._write_record()
        finally:
            ray.shutdown()

    # -- placement ----------------------------------------------------------------------------

    def place(self) -> None:
        """An actor per node, spread over the cluster; then each node's config listens on its
        machine's address and dials its neighbours at theirs."""
        self._check_capacity()
        for name in self.names:
            self.actors[name] = self._actor(name, "SPREAD")
        located = self._located(self.names)
        ports = ray.get([self.actors[n].free_port.remote(located[n].ip) for n in self.names])
        for name, port in zip(self.names, ports, strict=True):
            self.places[name] = Placement(located[name].ray_node, located[name].ip, port)
        self._check_chain_reachable()
        self._write_addresses()
        self._write_record()

    def _check_capacity(self) -> None:
        cpus = ray.cluster_resources().get("CPU", 0.0)
        need = len(self.names) * self.settings.num_cpus
        if need > cpus:
            raise SwarmError(
                f"the Ray cluster has {cpus:g} CPUs; {len(self.names)} nodes at ray.num_cpus = "
                f"{self.settings.num_cpus:g} need {need:g}: lower ray.num_cpus (0: no limit) "
                "or add machines to the cluster"
            )

    def _actor(self, name: str, strategy: Any) -> Any:
        return RemoteNode.options(
            num_cpus=self.settings.num_cpus, scheduling_strategy=strategy
        ).remote(str(self.folder / "nodes" / name))

    def _located(self, names: Sequence[str]) -> dict[str, Location]:
        refs = {n: self.actors[n].locate.remote() for n in names}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=PLACE_SECONDS)
        if len(ready) < len(refs):
            free = ray.available_resources().get("CPU", 0.0)
            missing = [n for n, ref in refs.items() if ref not in ready]
            raise SwarmError(
                f"Ray placed no actor for {', '.join(missing)} within {PLACE_SECONDS:.0f}s "
                f"(each takes ray.num_cpus = {self.settings.num_cpus:g} CPU; the cluster has "
                f"{free:g} free)"
            )
        located = dict(zip(refs, ray.get(list(refs.values())), strict=True))
        unreadable = {n: loc for n, loc in located.items() if loc.unreadable}
        if unreadable:
            lines = [f"{n} on {loc.ip}: {loc.unreadable}" for n, loc in unreadable.items()]
            raise SwarmError(
                f"Ray actors cannot read their nodes' files; every machine of the cluster must "
                f"see the run folder {self.folder} and the scenario's data at the same paths "
                "(a shared filesystem):\n  " + "\n  ".join(lines)
            )
        return located

    def _check_chain_reachable(self) -> None:
        """A chain the simulator runs listens on this machine's loopback only."""
        url = self.overrides.get("ledger.chain")
        host = urlparse(str(url)).hostname if url else None
        if host is None or not _is_loopback(host):
            return
        here = ray.util.get_node_ip_address()
        away = [n for n, p in self.places.items() if p.ip != here]
        if away:
            raise SwarmError(
                f"the chain at {url} serves this machine ({here}) only, and Ray placed "
                f"{', '.join(away)} on other machines: run across machines with "
                "chain.backend = 'none'"
            )

    def _write_addresses(self) -> None:
        peers = {
            peer_id_of(load_key_file(self.folder / "nodes" / n / "identity.key")): p
            for n, p in self.places.items()
        }
        for name, place in self.places.items():
            config = self.folder / "nodes" / name / "node.toml"
            text = config.read_text()
            neighbours = []
            for addr in load_config(config).node.neighbours:
                peer = addr.rsplit("/p2p/", 1)[1]
                neighbours.append(f"/ip4/{peers[peer].ip}/tcp/{peers[peer].port}/p2p/{peer}")
            settings = {
                "node.listen": f"/ip4/{place.ip}/tcp/{place.port}",
                "node.neighbours": neighbours,
            }
            config.write_text(with_settings(text, settings))

    def _write_record(self) -> None:
        """ray.json: the cluster and where each node ran (as docker.json for containers)."""
        record = {
            "address": self.settings.address or "local",
            "num_cpus": self.settings.num_cpus,
            "nodes": {n: asdict(p) for n, p in self.places.items()},
        }
        (self.folder / RECORD).write_text(json.dumps(record, indent=1))

    # -- Nodes --------------------------------------------------------------------------------

    def start(self, name: str) -> None:
        place = self.places[name]
        if name not in self.actors:  # a restart: a new actor where the node was
            here = NodeAffinitySchedulingStrategy(node_id=place.ray_node, soft=False)
            self.actors[name] = self._actor(name, here)
            self._located([name])
        self.runs[name] = self.actors[name].run.remote(self.flags)
        place.starts += 1
        self.killed.discard(name)

    def kill(self, name: str) -> None:
        ray.kill(self.actors.pop(name), no_restart=True)
        # Its port must be free again before a restart, as a killed process's is.
        ray.wait([self.runs[name]], timeout=KILL_SECONDS)
        self.killed.add(name)

    def pause(self, name: str) -> None:
        raise NotImplementedError("Ray cannot freeze an actor (the scenario rejects it)")

    def resume(self, name: str) -> None:
        raise NotImplementedError("Ray cannot freeze an actor (the scenario rejects it)")

    def running(self, name: str) -> bool:
        ready, _ = ray.wait([self.runs[name]], timeout=0)
        return not ready

    def failures(self) -> dict[str, str]:
        failed = {}
        for name, ref in self.runs.items():
            if name in self.killed or self.running(name):
                continue
            try:
                error = ray.get(ref)
            except RayActorError as exc:
                error = f"its Ray actor died: {exc}"
            if error:
                failed[name] = f"{error}; see {self.folder}/nodes/{name}/node.log"
        return failed

    def stop_all(self) -> None:
        for actor in self.actors.values():  # finished nodes' actors too: they hold CPUs
            ray.kill(actor, no_restart=True)
        if pending := list(self.runs.values()):
            ray.wait(pending, num_returns=len(pending), timeout=KILL_SECONDS)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
