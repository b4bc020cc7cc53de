"""docs/design.md's import rules, checked on the source: who may import whom.

`medswarm -> sim -> node -> gossip, ledger`; gossip and ledger import neither node nor each
other; no library imports medswarm; no two modules import each other, directly or round about.
Imports inside functions count as much as those at the top of a module.
"""

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["medswarm", "sim", "node", "gossip", "ledger"]
# What each package must not import (top-level package names).
FORBIDDEN = {
    "gossip": {"node", "ledger", "sim", "medswarm"},
    "ledger": {"node", "gossip", "sim", "medswarm"},
    "node": {"sim", "medswarm"},
    "sim": {"medswarm"},
}
PURE_NODE_MODULES = [
    "models",
    "personalize",
    "training",
    "merge",
    "scaling",
    "dataset",
    "checkpoint",
    "baselines",
    "contribution",
    "cross_site",
    "adversary",
    "params",
    "privacy",
    "privacy_audit",
    "analytics/query",
    "analytics/stats",
    "analytics/design",
    "analytics/glm",
    "analytics/disclosure",
    "analytics/answer",
    "analytics/tables",
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
    "node.privacy_audit",  # the privacy audit attacks what a node published, as a neighbour
    "node.cross_site",  # the simulator checks each node's cross-site row against its digest
    "node.analytics.query",  # a scenario's [analytics] is a node's query
    "node.analytics.tables",  # an analytics run's report shows the answer as `medswarm stats`
}


def imports(path: Path) -> set[str]:
    """Every absolute import in `path`, at any depth: `import a.b` gives a.b; `from a.b import
    c` gives a.b and a.b.c (c may be a module or a name; `module_graph` keeps modules only)."""
    found: set[str] = set()
    for item in ast.walk(ast.parse(path.read_text())):
        if isinstance(item, ast.Import):
            found.update(alias.name for alias in item.names)
        elif isinstance(item, ast.ImportFrom) and item.module and item.level == 0:
            found.add(item.module)
            found.update(f"{item.module}.{alias.name}" for alias in item.names)
    return found


def package_imports(package: str) -> dict[Path, set[str]]:
    return {p: imports(p) for p in (ROOT / package).rglob("*.py")}


def top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph() -> nx.DiGraph:
    """Our modules, with an edge a -> b where module a imports module b."""
    paths = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(paths)
    for name, path in paths.items():
        graph.add_edges_from((name, target) for target in imports(path) & paths.keys())
    graph.remove_edges_from(nx.selfloop_edges(graph))  # `from pkg import x` inside pkg/__init__
    return graph


@pytest.mark.parametrize(("package", "forbidden"), FORBIDDEN.items())
def test_packages_import_only_downwards(package, forbidden):
    for path, names in package_imports(package).items():
        assert not top(names) & forbidden, f"{path} imports {top(names) & forbidden}"


def test_no_import_cycles():
    cycles = sorted(_from_first(c) for c in nx.simple_cycles(module_graph()))
    shown = "\n  ".join(" -> ".join([*c, c[0]]) for c in cycles[:12])
    assert not cycles, f"{len(cycles)} import cycles, e.g.:\n  {shown}"


def _from_first(cycle: list[str]) -> list[str]:
    """The cycle rotated to start at its alphabetically first module: one way to print it."""
    i = cycle.index(min(cycle))
    return cycle[i:] + cycle[:i]


@pytest.mark.parametrize("module", PURE_NODE_MODULES)
def test_pure_node_modules_touch_no_network(module):
    names = imports(ROOT / "node" / f"{module}.py")
    assert not top(names) & NETWORK, f"node/{module}.py imports {top(names) & NETWORK}"


def test_sim_drives_nodes_only_through_public_entry_points():
    modules = set(module_graph())
    for path, names in package_imports("sim").items():
        internals = {n for n in names & modules if n.split(".")[0] == "node"} - SIM_MAY_USE
        assert not internals, f"{path} reaches into {internals}"


def test_the_checker_sees_imports():
    assert "gossip.errors" in imports(ROOT / "gossip" / "exchange.py")
    graph = module_graph()
    assert graph.has_edge("sim.run", "sim.partition")  # `from sim import partition`
    assert graph.has_edge("medswarm.cli.node", "node.runner")  # inside a function
