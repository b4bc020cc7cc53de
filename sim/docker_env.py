"""The Docker side of a simulation run: the engine, the images, one internal network and the
chain container, all labelled with the run's id and all removed when the run ends.

`DockerSwarm` is a context manager: whatever the run does inside it (and however it ends: a
failure, Ctrl-C), on the way out every container and network carrying its label is removed.
Nodes and chain get static addresses on a subnet of their own, so each node's config can name
its neighbours by IP before any of them starts, and a node cut off from the network comes back
with the same address.
"""

import gzip
import ipaddress
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import psutil
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.models.networks import Network
from docker.types import EndpointConfig, IPAMConfig, IPAMPool

from ledger.accounts import DEV_ACCOUNT_COUNT, DEV_MNEMONIC, dev_accounts
from ledger.backends import Chain
from ledger.backends.anvil import HARDFORK
from ledger.backends.rpc import http_web3
from sim.errors import SimError
from sim.local_swarm import tail

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SCRIPT = REPO_ROOT / "scripts" / "docker-image.sh"
ENGINE_SCRIPT = REPO_ROOT / "scripts" / "docker-engine.sh"
LABEL = "medswarm.run"  # every container and network of a run carries it, valued with its id
CHAIN_PORT = 8545
NODE_PORT = 4001  # libp2p, inside each node container
# Subnets tried for a run's network, in turn from a random one, skipping any in use.
SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")
SUBNET_PREFIX = 24
FIRST_NODE_HOST = 10  # .1 is the bridge (the host's side), .2 the chain, nodes from .10
CHAIN_HOST = 2


class DockerError(SimError):
    """The engine, an image, a network or a container failed; the message says which."""


def node_image() -> str:
    return os.environ.get("MEDSWARM_IMAGE", "medswarm:latest")


def chain_image() -> str:
    return os.environ.get("MEDSWARM_CHAIN_IMAGE", "medswarm-chain:latest")


def engine() -> docker.DockerClient:
    """A client of the running engine, or a DockerError saying how to start one."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as exc:
        raise DockerError(
            f"no Docker engine answers ({exc}); start one with `sudo {ENGINE_SCRIPT}`"
        ) from None
    return client


def ensure_images(client: docker.DockerClient, log: Path) -> float | None:
    """Build the images with scripts/docker-image.sh if one is missing; the seconds the build
    took, or None if both were there. The script's output goes to `log`."""
    missing = [name for name in (node_image(), chain_image()) if not _has_image(client, name)]
    if not missing:
        return None
    return build_images(log, reason=f"missing: {', '.join(missing)}")


def build_images(log: Path, reason: str = "", env: Mapping[str, str] | None = None) -> float:
    """Run scripts/docker-image.sh (idempotent; it builds what is missing or out of date)."""
    if not IMAGE_SCRIPT.is_file():
        raise DockerError(f"images {reason or 'wanted'}, and {IMAGE_SCRIPT} does not exist")
    log.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with log.open("ab") as sink:
        code = subprocess.call(
            ["bash", str(IMAGE_SCRIPT)],
            cwd=REPO_ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    if code != 0:
        raise DockerError(f"{IMAGE_SCRIPT} failed (exit {code}); its last lines:\n{tail(log, 20)}")
    return time.perf_counter() - began


def _has_image(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except ImageNotFound:
        return False
    return True


def pick_subnet(taken: Sequence[ipaddress.IPv4Network], start: int | None = None) -> Iterator[str]:
    """Candidate /24s of SUBNET_POOL that overlap none of `taken`, from a random one on (two
    runs at once rarely try the same one first)."""
    subnets = list(SUBNET_POOL.subnets(new_prefix=SUBNET_PREFIX))
    first = secrets.randbelow(len(subnets)) if start is None else start
    for subnet in subnets[first:] + subnets[:first]:
        if not any(subnet.overlaps(t) for t in taken):
            yield str(subnet)


def subnets_in_use(client: docker.DockerClient) -> list[ipaddress.IPv4Network]:
    """The subnets of the engine's networks and of this machine's interfaces."""
    found = []
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            if "Subnet" in config and ":" not in config["Subnet"]:
                found.append(ipaddress.IPv4Network(config["Subnet"], strict=False))
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family.name == "AF_INET" and addr.netmask:
                net = f"{addr.address}/{addr.netmask}"
                found.append(ipaddress.IPv4Network(net, strict=False))
    return found


class DockerSwarm:
    """One run's network and containers. Use it as a context manager: leaving it removes
    everything labelled with `run_id`, whatever happened inside."""

    def __init__(self, client: docker.DockerClient, run_id: str | None = None) -> None:
        self.client = client
        self.run_id = run_id or secrets.token_hex(4)
        self.labels = {LABEL: self.run_id}
        self.network: Network | None = None
        self.subnet: ipaddress.IPv4Network | None = None
        self.chain_container: Container | None = None

    def __enter__(self) -> "DockerSwarm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove_all()

    def name(self, part: str) -> str:
        return f"medswarm-{self.run_id}-{part}"

    # -- network ------------------------------------------------------------------------------

    def create_network(self, hosts: int) -> Network:
        """An internal bridge network (containers reach each other and this host, nothing
        else) on a free subnet with room for `hosts` nodes."""
        room = 2 ** (32 - SUBNET_PREFIX) - FIRST_NODE_HOST - 1
        if hosts > room:
            raise DockerError(f"{hosts} nodes do not fit a /{SUBNET_PREFIX} (at most {room})")
        errors = []
        for subnet in pick_subnet(subnets_in_use(self.client)):
            net = ipaddress.ip_network(subnet)
            ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=subnet, gateway=str(net[1]))])
            try:
                self.network = self.client.networks.create(
                    self.name("net"), driver="bridge", internal=True, ipam=ipam, labels=self.labels
                )
            except APIError as exc:  # taken meanwhile by another run: try the next
                errors.append(f"{subnet}: {exc.explanation}")
                if len(errors) >= 5:
                    break
                continue
            self.subnet = ipaddress.IPv4Network(subnet)
            return self.network
        raise DockerError("could not create the run's network:\n" + "\n".join(errors))

    def node_ip(self, index: int) -> str:
        assert self.subnet is not None, "create_network first"
        return str(self.subnet[FIRST_NODE_HOST + index])

    @property
    def chain_ip(self) -> str:
        assert self.subnet is not None, "create_network first"
        return str(self.subnet[CHAIN_HOST])

    def endpoint(self, ip: str) -> dict[str, EndpointConfig]:
        assert self.network is not None
        return {self.network.name: EndpointConfig(self.client.api._version, ipv4_address=ip)}

    # -- chain --------------------------------------------------------------------------------

    def start_chain(self, timeout: float = 60.0) -> Chain:
        """Anvil in a container on the run's network, with the same dev accounts as the
        managed local Anvil; this host reaches it at its container address."""
        assert self.network is not None
        self.chain_container = self.client.containers.create(
            chain_image(),
            # Appended to the image's entrypoint, `anvil --host 0.0.0.0 --port 8545`.
            command=[
                "--hardfork",
                HARDFORK,
                "--accounts",
                str(DEV_ACCOUNT_COUNT),
                "--mnemonic",
                DEV_MNEMONIC,
            ],
            name=self.name("chain"),
            labels={**self.labels, "medswarm.role": "chain"},
            network=self.network.name,
            networking_config=self.endpoint(self.chain_ip),
        )
        self.chain_container.start()
        url = f"http://{self.chain_ip}:{CHAIN_PORT}"
        w3 = http_web3(url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if w3.is_connected():
                    break
            except OSError:
                pass
            self.chain_container.reload()
            if self.chain_container.status != "running" or time.monotonic() > deadline:
                raise DockerError(
                    f"the chain container {self.chain_container.name} did not answer at {url} "
                    f"within {timeout:.0f}s (state {self.chain_container.status}); its log:\n"
                    + logs(self.chain_container)
                )
            time.sleep(0.2)
        return Chain(name="anvil", w3=w3, dev_accounts=dev_accounts(), url=url)

    def save_chain_state(self, chain: Chain, path: Path) -> None:
        """The chain's state as Anvil's `--state` file, for auditing after the container is
        gone (`anvil_dumpState` gives it gzipped)."""
        raw = chain.w3.provider.make_request("anvil_dumpState", [])  # type: ignore[arg-type]
        if "result" not in raw:
            raise DockerError(f"anvil_dumpState failed: {raw.get('error')}")
        data = bytes.fromhex(str(raw["result"]).removeprefix("0x"))
        text = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json.loads(text)))

    # -- cleanup ------------------------------------------------------------------------------

    def containers(self) -> list[Container]:
        return list(self.client.containers.list(all=True, filters={"label": self._label()}))

    def networks(self) -> list[Network]:
        return list(self.client.networks.list(filters={"label": self._label()}))

    def _label(self) -> str:
        return f"{LABEL}={self.run_id}"

    def remove_all(self) -> None:
        """Remove every container and network of this run; what could not be removed is
        raised as one DockerError after trying all of them."""
        problems = []
        for _ in range(2):  # a second pass for anything created while the first one ran
            for container in self.containers():
                try:
                    if container.status == "paused":  # engines before 17.06 refuse to remove it
                        container.unpause()
                    container.remove(force=True)
                except NotFound:
                    pass
                except APIError as exc:
                    problems.append(f"container {container.name}: {exc.explanation}")
            for network in self.networks():
                try:
                    network.remove()
                except NotFound:
                    pass
                except APIError as exc:
                    problems.append(f"network {network.name}: {exc.explanation}")
        if problems:
            raise DockerError("could not remove:\n" + "\n".join(problems))


def logs(container: Container, lines: int = 20) -> str:
    try:
        return bytes(container.logs(tail=lines)).decode(errors="replace").rstrip()
    except DockerException as exc:
        return f"(no log: {exc})"


def describe(attrs: Mapping[str, Any]) -> str:
    """A container's state in a few words: status, exit code, OOM, error."""
    state = attrs.get("State") or {}
    text = f"{state.get('Status')}, exit code {state.get('ExitCode')}"
    if state.get("OOMKilled"):
        text += ", killed for lack of memory"
    if state.get("Error"):
        text += f", {state['Error']}"
    return text
