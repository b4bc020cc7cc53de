"""DESIGN.md's import rules, checked on the source: who may import whom."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_NODE_MODULES = [
    "models",
    "training",
    "merge",
    "scaling",
    "dataset",
    "checkpoint",
    "baselines",
    "contribution",
    "adversary",
    "params",
]
NETWORK = {"trio", "libp2p", "multiaddr", "gossip", "ledger", "web3"}
# What the simulator may use of a node: its config, init and the public data/baseline API.
SIM_MAY_USE = {
    "node.config",
    "node.init",
    "node.metrics",
    "node.baselines",
    "node.dataset",
    "node.errors",
    "node.runner",  # NodeRunner is `node run`'s entry point; the inproc backend calls it
    "node.offload",  # the FedAvg baseline's clients run training as the nodes do
}


def imports(path: Path) -> set[str]:
    found = set()
    for item in ast.walk(ast.parse(path.read_text())):
        if isinstance(item, ast.Import):
            found.update(alias.name for alias in item.names)
        elif isinstance(item, ast.ImportFrom) and item.module and item.level == 0:
            found.add(item.module)
    return found


def package_imports(package: str) -> dict[Path, set[str]]:
    return {p: imports(p) for p in (ROOT / package).rglob("*.py")}


def top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("gossip", {"node", "ledger", "sim"}), ("ledger", {"node", "gossip", "sim"})],
)
def test_gossip_and_ledger_stand_alone(package, forbidden):
    for path, names in package_imports(package).items():
        assert not top(names) & forbidden, f"{path} imports {top(names) & forbidden}"


@pytest.mark.parametrize("module", PURE_NODE_MODULES)
def test_pure_node_modules_touch_no_network(module):
    names = imports(ROOT / "node" / f"{module}.py")
    assert not top(names) & NETWORK, f"node/{module}.py imports {top(names) & NETWORK}"


def test_sim_drives_nodes_only_through_public_entry_points():
    for path, names in package_imports("sim").items():
        internals = {n for n in names if n.split(".")[0] == "node"} - SIM_MAY_USE
        assert not internals, f"{path} reaches into {internals}"


def test_the_checker_sees_imports():
    assert "gossip.errors" in imports(ROOT / "gossip" / "exchange.py")
