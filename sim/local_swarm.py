"""A local swarm: one `medswarm node run` process per node on 127.0.0.1.

The simulator drives nodes only through their public entry points: it writes node configs and
keys, starts the CLI, and reads the output folders (metrics.jsonl, summary.json).
"""

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gossip.identity import create_key_file, create_x25519_key_file, peer_id_of
from node.init import PEER_KEYS_FILE, render_config, with_settings, write_peer_keys
from sim.errors import AlreadyExists, SimError
from sim.topology import matchings
from sim.topology import neighbours as neighbour_sets

if TYPE_CHECKING:  # web3 is imported only for a run with a chain
    from ledger.backends import Chain
    from sim.consortium import ConsortiumPlan

REPO_ROOT = Path(__file__).resolve().parents[1]
HEART_DISEASE = REPO_ROOT / "data" / "heart-disease"
HEART_SITES = {
    "cleveland": "processed.cleveland.data",
    "hungarian": "processed.hungarian.data",
    "switzerland": "processed.switzerland.data",
    "va": "processed.va.data",
}


class SwarmError(SimError):
    """A swarm folder is unusable, or a node process failed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rotation_settings(
    nbrs: Sequence[set[int]], names: Sequence[str], seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Per-node settings for a rotation of matchings over `nbrs`: each link's phase, listed in
    the neighbour order `init_swarm` writes (sorted), so both ends of a link agree on it."""
    phases = matchings(nbrs, seed)
    rotation = max(phases.values(), default=0) + 1
    return {
        name: {
            "swarm.rotation": rotation,
            "node.neighbour_phases": [phases[frozenset((i, j))] for j in sorted(nbrs[i])],
        }
        for i, name in enumerate(names)
    }


def init_swarm(
    folder: Path,
    sites: Mapping[str, Path],
    schema: Path,
    *,
    rounds: int,
    topology: str | Sequence[set[int]] = "ring",
    model: str = "mlp",
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    ledger: "ConsortiumPlan | None" = None,
    chain: "Chain | None" = None,
) -> list[Path]:
    """Write one config and identity per site; `extra` sets per-node config keys (dotted).
    With `ledger`, also a consortium whose members are these nodes, on `chain` (default: an
    Anvil whose state stays in the folder, for `open_chain(folder)` to start again)."""
    if (folder / "swarm.json").exists():
        raise AlreadyExists(f"{folder} already holds a swarm (swarm.json)")
    names = list(sites)
    edges = neighbour_sets(topology, len(names)) if isinstance(topology, str) else topology
    ports = [free_port() for _ in names]
    peer_ids, masking_keys = [], {}
    for name in names:
        node_dir = folder / "nodes" / name
        node_dir.mkdir(parents=True, exist_ok=True)
        peer_ids.append(peer_id_of(create_key_file(node_dir / "identity.key")))
        masking_keys[peer_ids[-1]] = create_x25519_key_file(node_dir / "x25519.key")
    if ledger is None:  # the consortium's key file; with a ledger the registry holds them
        write_peer_keys(folder / PEER_KEYS_FILE, masking_keys)
    consortium, ledger_key_file = None, ""
    if ledger is not None:
        from sim.consortium import KEY_FILE, create_consortium, open_chain

        ledger_key_file = KEY_FILE
        members = dict(zip(names, peer_ids, strict=True))
        keys = {name: masking_keys[peer] for name, peer in members.items()}
        if chain is None:
            with open_chain(folder) as anvil:
                consortium = create_consortium(anvil, folder, members, ledger, keys)
        else:
            consortium = create_consortium(chain, folder, members, ledger, keys)
    configs = []
    for i, name in enumerate(names):
        node_dir = folder / "nodes" / name
        neighbours = [f"/ip4/127.0.0.1/tcp/{ports[j]}/p2p/{peer_ids[j]}" for j in sorted(edges[i])]
        text = render_config(
            name=name,
            key_file="identity.key",
            listen=f"/ip4/127.0.0.1/tcp/{ports[i]}",
            neighbours=neighbours,
            output_dir="out",
            data=str(sites[name].resolve()),
            schema=str(schema.resolve()),
            model=model,
            rounds=rounds,
            ledger_contract=consortium["contract"] if consortium else "",
            ledger_key_file=ledger_key_file,
            peer_keys="" if consortium else f"../../{PEER_KEYS_FILE}",
        )
        (node_dir / "node.toml").write_text(with_settings(text, (extra or {}).get(name, {})))
        configs.append(node_dir / "node.toml")
    manifest = {
        "nodes": names,
        "topology": topology if isinstance(topology, str) else "custom",
        "rounds": rounds,
        "ledger": consortium,
    }
    (folder / "swarm.json").write_text(json.dumps(manifest, indent=1))
    return configs


def node_command(config: Path, overrides: Mapping[str, Any] = {}) -> list[str]:
    cmd = [sys.executable, "-m", "medswarm", "node", "run", "--config", str(config), "--quiet"]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    return cmd


def start_node(folder: Path, name: str, overrides: Mapping[str, Any] = {}) -> subprocess.Popen:
    """Start one node process; its output goes to nodes/<name>/node.log."""
    node_dir = folder / "nodes" / name
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(node_dir / "node.log", "ab") as log:  # the child keeps its own copy of the fd
        return subprocess.Popen(
            node_command(node_dir / "node.toml", overrides),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def load_manifest(folder: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((folder / "swarm.json").read_text()))
    except FileNotFoundError:
        raise SwarmError(f"{folder}: no swarm.json; `init_swarm` writes one") from None


def stop_processes(procs: Collection[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of a log file, "" if there is none."""
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )
