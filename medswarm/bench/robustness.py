"""`medswarm bench robustness`: the attack x defence table (issue 17, item 3).

The breast-cancer scenario (Breast Cancer Wisconsin, 20 nodes by Dirichlet label skew alpha
0.3, validation share 0.25, MLP 32 hidden, SGD lr 0.1, batch 32, one local epoch a round, its
40 rounds) on a 4-regular graph where every node merges with all four neighbours every round
(a robust rule needs them all at once: the shipped scenario's rotation of matchings would give
it one), on the inproc backend, seeded. For every seed (default five) and merge rule one clean
run, then for every attack and every Byzantine fraction (default 10% and 20%: 2 and 4 of the 20
nodes) one run with that many attackers, chosen by the seed (the 10% attackers are among the
20% ones).

Measured per cell: the honest nodes' mean final accuracy, each node on its own validation
split (the simulator's summary), against the clean run of the same rule and seed averaged over
the same nodes (so a cell compares like with like: the attackers' own validation rows are in
neither); the mean over the seeds. The splits are small (3 to 17 rows; one row of a 3-row node
is 2.1 points of 16 honest nodes' mean), hence several seeds.

Rule parameters: f = `swarm.byzantine` = 1 for every robust rule. At 20% an honest node has
0.75 to 1.0 Byzantine neighbours on average (by seed), and Krum's bound (n > 2f + 2, n = 5
models) admits no more on degree 4; median and trimmed mean do not read f (trimmed mean drops
k = floor(0.2 * 5) = 1 value at each end), multi-Krum averages m = n - f = 4, clipped gossip's
radius is adaptive (the second-largest neighbour distance), UBAR drops the farthest neighbour
before its loss screen.
Bulyan needs n >= 4f + 3, six neighbours for f = 1, so it has no cell on this graph (the JSON
says so under `skipped_rules`). A rule whose bound the graph cannot meet is found by the
config's own check (`node.config.byzantine_problem`).

The recommended rule is computed from the cells (`recommend`): the rule with the best clean
accuracy among those within `MARGIN` (2 points) of their clean run under every attack at every
Byzantine fraction measured; None, with each rule's failures, if no rule is.
"""

import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from medswarm.bench.journal import RunJournal
from medswarm.bench.tables import bench_table
from node.errors import NodeError
from sim import topology
from sim.errors import SimError

REPO_ROOT = Path(__file__).resolve().parents[2]
BREAST_CANCER = REPO_ROOT / "data" / "breast-cancer"
NODES = 20
DEGREE = 4
ROUNDS = 40  # the breast-cancer scenario's own (sim/scenarios/breast-cancer.toml)
SEEDS = (0, 1, 2, 3, 4)
FRACTIONS = (0.1, 0.2)
WORKERS = 2
MARGIN = 0.02  # "within 2 points" of the clean run, accuracy as a share


@dataclass(frozen=True)
class Rule:
    """A merge rule and the `[swarm]` settings it runs with."""

    name: str
    byzantine: int = 0
    trim_fraction: float = 0.2
    multi_krum_m: int = 0
    clip_radius: float = 0.0
    self_weight: float = 0.5

    def swarm(self) -> dict[str, Any]:
        return {"merge": self.name, **{k: v for k, v in asdict(self).items() if k != "name"}}


RULES = {
    r.name: r
    for r in (
        Rule("metropolis"),
        Rule("neighbourhood"),
        Rule("median", byzantine=1),
        Rule("trimmed_mean", byzantine=1, trim_fraction=0.2),
        Rule("krum", byzantine=1),
        Rule("multi_krum", byzantine=1),
        Rule("bulyan", byzantine=1),
        Rule("clipped_gossip", byzantine=1),
        Rule("ubar", byzantine=1),
    )
}

# Each attack as the [[attacks]] table of one attacker (its `node` added); "colluding" is ALIE
# with every attacker in one group. The simulator's defaults otherwise (sim/scenario.py).
ATTACKS: dict[str, dict[str, Any]] = {
    "label_flip": {"kind": "label_flip", "fraction": 1.0},
    "noise": {"kind": "noise", "std": 1.0},
    "sign_flip": {"kind": "sign_flip"},
    "alie": {"kind": "alie"},  # z: the paper's z_max for what the attacker merges from
    "ipm": {"kind": "ipm", "epsilon": 0.5},
    "colluding": {"kind": "alie", "group": "byzantine"},
    # Not in the table by default: a control. A replaying free rider trains nothing and relays
    # the merge it received, so the honest nodes lose the attackers' records and little else:
    # about what a rule loses to the attackers' absence alone.
    "free_rider": {"kind": "free_rider", "mode": "replay"},
}
DEFAULT_ATTACKS = ("label_flip", "noise", "sign_flip", "alie", "ipm", "colluding")


def node_names(nodes: int = NODES) -> list[str]:
    width = max(2, len(str(nodes - 1)))
    return [f"n{i:0{width}d}" for i in range(nodes)]


def attackers(seed: int, fraction: float, nodes: int = NODES) -> list[str]:
    """round(fraction * nodes) nodes, the first of a seeded permutation: the attackers at a
    smaller fraction are among those at a larger one."""
    order = np.random.default_rng([seed, 17]).permutation(nodes)
    count = round(fraction * nodes)
    names = node_names(nodes)
    return sorted(names[i] for i in order[:count])


def byzantine_neighbours(
    seed: int, bad: Sequence[str], nodes: int = NODES, degree: int = DEGREE
) -> dict[str, int]:
    """Per honest node, its Byzantine neighbours on the seed's graph (the one the run uses)."""
    names = node_names(nodes)
    graph = topology.neighbours("k_regular", nodes, degree=degree, seed=seed)
    bad_index = {names.index(b) for b in bad}
    return {names[i]: len(graph[i] & bad_index) for i in range(nodes) if names[i] not in bad}


def rule_problem(rule: Rule, degree: int = DEGREE) -> str | None:
    """Why `rule` cannot run with its f on a graph of `degree` (None: it can), by the check
    every node runs at start."""
    from node.config import SwarmSection, byzantine_problem

    swarm = SwarmSection(**rule.swarm())
    return byzantine_problem(swarm, degree, f"a node of the {degree}-regular graph has {degree}")


def _toml(value: Any) -> str:
    """A scalar as TOML: strings quoted (JSON's escapes are TOML's), booleans lower case."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def scenario_text(
    rule: Rule,
    attack: str | None,
    bad: Sequence[str],
    seed: int,
    rounds: int = ROUNDS,
    workers: int = WORKERS,
    nodes: int = NODES,
    degree: int = DEGREE,
    test_fraction: float = 0.0,
) -> str:
    """One run: `rule` on the breast-cancer swarm, `bad` nodes attacking with `attack`; with
    `test_fraction`, that share of the records held out (stratified, seeded) as a common test
    set before the split."""
    swarm = "\n".join(f"{k} = {_toml(v)}" for k, v in rule.swarm().items())
    tables = []
    for node in bad:
        assert attack is not None
        fields = {**ATTACKS[attack], "node": node}
        tables.append("[[attacks]]\n" + "\n".join(f"{k} = {_toml(v)}" for k, v in fields.items()))
    label = f"{attack}-{len(bad)}" if attack else "clean"
    shared = f"workers = {workers}\n" if workers > 1 else ""
    test = f"test_fraction = {test_fraction!r}\n" if test_fraction else ""
    return f"""\
# Written by `medswarm bench robustness`.
name = "robust-{rule.name.replace("_", "-")}-{label.replace("_", "-")}"
seeds = [{seed}]
backend = "inproc"
{shared}rounds = {rounds}

[data]
schema = {json.dumps(str(BREAST_CANCER / "schema.toml"))}
file = {json.dumps(str(BREAST_CANCER / "breast-cancer.csv"))}
split = "dirichlet"
nodes = {nodes}
alpha = 0.3
min_rows = 10
validation_fraction = 0.25
{test}
[topology]
kind = "k_regular"
degree = {degree}

[model]
name = "mlp"
hidden = [32]

[training]
epochs = 1
batch_size = 32
lr = 0.1
optimizer = "sgd"

[swarm]
{swarm}

[chain]
backend = "none"

[baselines]
local_only = false
centralized = false
fedavg = false

{chr(10).join(tables)}
"""


# -- the recommendation -----------------------------------------------------------------------


def recommend(cells: Sequence[dict[str, Any]], margin: float = MARGIN) -> dict[str, Any]:
    """The rule to recommend, from the cells alone: among the rules within `margin` of their
    clean run (clean_accuracy - accuracy <= margin) for every attack at every Byzantine fraction
    in the table, the one with the best clean accuracy (its 0% cells; ties: the first in table
    order). A cell without an accuracy (a failed run) fails its rule. Returns {"rule": name or
    None, "passing": [...], "failures": {rule: [{attack, byzantine_fraction, drop_points}]},
    "clean_accuracy": {rule: share}, "worst_accuracy": {rule: the lowest attacked cell},
    "reason": text}."""
    rules = list(dict.fromkeys(c["rule"] for c in cells))
    attacks = list(dict.fromkeys(c["attack"] for c in cells))
    fractions = sorted({c["byzantine_fraction"] for c in cells if c["byzantine_fraction"] > 0})
    by_key = {(c["rule"], c["attack"], c["byzantine_fraction"]): c for c in cells}
    clean: dict[str, float | None] = {}
    failures: dict[str, list[dict[str, Any]]] = {}
    for rule in rules:
        zero = [c["accuracy"] for c in cells if c["rule"] == rule and c["byzantine_fraction"] == 0]
        clean[rule] = zero[0] if zero and zero[0] is not None else None
        failures[rule] = []
        for attack in attacks:
            for fraction in fractions:
                cell = by_key.get((rule, attack, fraction))
                drop = _drop(cell) if cell is not None else None
                if drop is None or drop > margin + 1e-12:
                    failures[rule].append({
                        "attack": attack,
                        "byzantine_fraction": fraction,
                        "drop_points": None if drop is None else round(100 * drop, 2),
                    })  # fmt: skip
    worst = {
        r: min(
            (c["accuracy"] for c in cells
             if c["rule"] == r and c["byzantine_fraction"] > 0 and c["accuracy"] is not None),
            default=None,
        )
        for r in rules
    }  # fmt: skip
    passing = [r for r in rules if not failures[r] and clean[r] is not None]
    best = max(passing, key=lambda r: clean[r] or 0.0, default=None)  # max keeps the first
    criterion = (
        f"within {100 * margin:g} points of the clean run for every attack "
        f"({', '.join(attacks)}) at every Byzantine fraction "
        f"({', '.join(f'{f:.0%}' for f in fractions)}); of those, the best clean accuracy"
    )
    if not fractions:
        reason = "no attacked cells: nothing to recommend a rule on"
        best = None
    elif best is None:
        reason = "no rule meets the criterion: " + "; ".join(
            f"{r}: " + ", ".join(_failure_text(f) for f in failures[r]) for r in rules
        )
    else:
        reason = (
            f"{best} meets the criterion with clean accuracy {100 * (clean[best] or 0):.1f}%"
            + (f" (also meeting it: {', '.join(r for r in passing if r != best)})"
               if len(passing) > 1 else "")
        )  # fmt: skip
    return {
        "rule": best,
        "criterion": criterion,
        "margin_points": 100 * margin,
        "fractions": fractions,
        "passing": passing,
        "clean_accuracy": clean,
        "worst_accuracy": worst,
        "failures": failures,
        "reason": reason,
    }


def _drop(cell: dict[str, Any]) -> float | None:
    if cell.get("accuracy") is None or cell.get("clean_accuracy") is None:
        return None
    return float(cell["clean_accuracy"]) - float(cell["accuracy"])


def _failure_text(f: dict[str, Any]) -> str:
    where = f"{f['attack']} at {f['byzantine_fraction']:.0%}"
    return (
        f"{where} (failed run)"
        if f["drop_points"] is None
        else (f"{where} (-{f['drop_points']:.1f})")
    )


# -- running ----------------------------------------------------------------------------------


def _run(path: Path, folder: Path) -> dict[str, Any]:
    """One scenario in this process (the inproc nodes: here and in `workers - 1` workers)."""
    from sim.run import run_scenario

    [summary] = run_scenario(path, folder, Console(quiet=True))
    return summary


def _measure(path: Path, folder: Path, on_test: bool) -> dict[str, Any]:
    """One run's result: each node's final accuracy and which nodes are honest, or its error;
    and how long it took."""
    t0 = time.perf_counter()
    try:
        summary = _run(path, folder)
        run: dict[str, Any] = {
            "nodes": _accuracies(summary, on_test),
            "honest": [n for n, v in summary["nodes"].items() if v["honest"]],
        }
    except (SimError, NodeError, ExceptionGroup, OSError) as exc:
        # A failed run is a result (the swarm's errors, the inproc nursery's group); anything
        # else is a bug and stops the bench.
        run = {"error": f"{type(exc).__name__}: {exc}"}
    run["seconds"] = time.perf_counter() - t0
    return run


def run_robustness_bench(
    console: Console,
    rounds: int = ROUNDS,
    seeds: Sequence[int] = SEEDS,
    attacks: Sequence[str] | None = None,
    rules: Sequence[str] | None = None,
    fractions: Sequence[float] = FRACTIONS,
    workers: int = WORKERS,
    keep: Path | None = None,
    nodes: int = NODES,
    margin: float = MARGIN,
    test_fraction: float = 0.0,
    journal: RunJournal | None = None,
) -> dict[str, Any]:
    """Run the table; print it; return the results (the JSON). Accuracy: each node's on its
    own validation split, or with `test_fraction` on the common test set held out. With a
    `journal`, each finished run is recorded there and a run recorded before is not run again."""
    attacks = list(attacks or DEFAULT_ATTACKS)
    rules = list(rules or RULES)
    for a in attacks:
        if a not in ATTACKS:
            raise ValueError(f"unknown attack {a!r}: expected {' | '.join(ATTACKS)}")
    for r in rules:
        if r not in RULES:
            raise ValueError(f"unknown rule {r!r}: expected {' | '.join(RULES)}")
    for f in fractions:
        if not 0 < f < 0.5:
            raise ValueError(f"Byzantine fraction {f:g}: expected more than 0 and below 0.5")
        if round(f * nodes) == 0:
            raise ValueError(f"Byzantine fraction {f:g} of {nodes} nodes is no node")
    if rounds < 1:
        raise ValueError("--rounds must be at least 1")
    if not 0 <= test_fraction < 0.5:
        raise ValueError(f"test fraction {test_fraction:g}: expected 0 (none) up to below 0.5")
    fractions = sorted(set(fractions))
    skipped = {r: p for r in rules if (p := rule_problem(RULES[r])) is not None}
    runnable = [r for r in rules if r not in skipped]
    for r, problem in skipped.items():
        console.print(f"[yellow]{r}: no cell:[/yellow] {problem}", highlight=False)
    if not runnable:
        raise ValueError("no rule can run on this graph: " + "; ".join(skipped.values()))
    bad = {s: {f: attackers(s, f, nodes) for f in fractions} for s in seeds}
    planned = len(seeds) * len(runnable) * (1 + len(attacks) * len(fractions))
    began = time.perf_counter()
    runs: dict[tuple[int, str, str | None, float], dict[str, Any]] = {}
    done = 0
    if journal is not None and journal.results:
        console.print(
            f"resuming: {len(journal.results)} finished run(s) in {journal.path} are reused "
            "where the scenario and the code are unchanged (--fresh runs every one again)",
            highlight=False,
        )
    elif journal is not None:
        console.print(f"each finished run is kept in {journal.path}: stopped part way, the "
                      "same command resumes", highlight=False)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="medswarm-bench-robustness-") as tmp:
        work = Path(tmp) if keep is None else keep
        work.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            for rule in runnable:
                cases: list[tuple[str | None, float]] = [(None, 0.0)]
                cases += [(a, f) for a in attacks for f in fractions]
                for attack, fraction in cases:
                    done += 1
                    who = bad[seed][fraction] if attack else []
                    label = f"{attack or 'clean'}-{round(100 * fraction)}"
                    name = f"s{seed}-{rule}-{label}"
                    text = scenario_text(
                        RULES[rule], attack, who, seed, rounds, workers, nodes,
                        test_fraction=test_fraction,
                    )  # fmt: skip
                    earlier = journal.get(text) if journal is not None else None
                    if earlier is not None:
                        run = earlier
                    else:
                        path = work / f"{name}.toml"
                        path.write_text(text)
                        run = _measure(path, work / name, test_fraction > 0)
                        if journal is not None and "error" not in run:  # a failure: run again
                            journal.add(text, run)
                    runs[(seed, rule, attack, fraction)] = run
                    console.print(
                        f"[{done}/{planned}] seed {seed}, {rule}, {attack or 'clean'}"
                        + (f" {fraction:.0%} ({', '.join(who)})" if attack else "")
                        + f": {_progress(run, runs.get((seed, rule, None, 0.0)))}, "
                        + f"{run['seconds']:.1f}s"
                        + (" (finished before)" if earlier is not None else ""),
                        highlight=False,
                    )
    cells = build_cells(runs, seeds, runnable, attacks, fractions)
    recommendation = recommend(cells, margin)
    neighbours = {
        str(s): {
            f"{f:g}": _neighbour_stats(byzantine_neighbours(s, bad[s][f], nodes)) for f in fractions
        }
        for s in seeds
    }
    results = {
        "recommended_rule": recommendation["rule"],
        "recommendation": recommendation,
        "cells": cells,
        "clean": {
            r: next(c for c in cells if c["rule"] == r and c["byzantine_fraction"] == 0)
            for r in runnable
        },
        "rules": {r: RULES[r].swarm() for r in runnable},
        "skipped_rules": skipped,
        "attacks": {a: ATTACKS[a] for a in attacks},
        "attackers": {str(s): {f"{f:g}": bad[s][f] for f in fractions} for s in seeds},
        "byzantine_neighbours": neighbours,
        "settings": {
            "scenario": "breast cancer, Dirichlet 0.3, validation share 0.25, MLP [32], "
            "SGD lr 0.1 batch 32, 1 local epoch",
            "nodes": nodes,
            "topology": f"k_regular, degree {DEGREE}, every neighbour every round",
            "rounds": rounds,
            "seeds": list(seeds),
            "fractions": fractions,
            "backend": "inproc",
            "workers": workers,
            "test_fraction": test_fraction,
            "accuracy": "honest nodes' mean final accuracy, "
            + (
                f"each on the common test set ({test_fraction:.0%} of the records held out)"
                if test_fraction
                else "each on its own validation split"
            )
            + " (mean over seeds); clean_accuracy: the same rule's clean run over the same nodes",
            "margin_points": 100 * margin,
        },
        "errors": [
            {"seed": s, "rule": r, "attack": a, "byzantine_fraction": f, "error": v["error"]}
            for (s, r, a, f), v in runs.items()
            if "error" in v
        ],
        "total_seconds": time.perf_counter() - began,
    }
    console.print(cells_table(results))
    console.print(f"recommended rule: {recommendation['rule']} ({recommendation['reason']})",
                  highlight=False)  # fmt: skip
    console.print(f"bench took {results['total_seconds']:.0f}s")
    return results


def _accuracies(summary: dict[str, Any], on_test: bool) -> dict[str, float]:
    """Each node's final accuracy: on its validation split, or on the common test set."""
    if on_test:
        return {n: float(v["accuracy"]) for n, v in summary["test"]["nodes"].items()}
    return {n: float(v["accuracy"]) for n, v in summary["nodes"].items()}


def _progress(run: dict[str, Any], clean: dict[str, Any] | None) -> str:
    if "error" in run:
        return f"[red]failed[/red]: {run['error']}"
    mean = float(np.mean([run["nodes"][n] for n in run["honest"]]))
    text = f"honest mean {100 * mean:.1f}%"
    if clean is not None and clean is not run and "error" not in clean:
        base = float(np.mean([clean["nodes"][n] for n in run["honest"]]))
        text += f" (clean {100 * base:.1f}%, {100 * (mean - base):+.1f} points)"
    return text


def _neighbour_stats(per_node: dict[str, int]) -> dict[str, Any]:
    counts = list(per_node.values())
    return {
        "max": max(counts),
        "mean": float(np.mean(counts)),
        "honest_nodes_with_more_than_1": sum(c > 1 for c in counts),
    }


def build_cells(
    runs: dict[tuple[int, str, str | None, float], dict[str, Any]],
    seeds: Sequence[int],
    rules: Sequence[str],
    attacks: Sequence[str],
    fractions: Sequence[float],
) -> list[dict[str, Any]]:
    """The table's cells from the runs (keyed (seed, rule, attack or None, fraction)): the 0%
    cells are each rule's clean run, once per attack."""
    cells = []
    for attack in attacks:
        for fraction in (0.0, *fractions):
            for rule in rules:
                per_seed: list[dict[str, Any]] = []
                for seed in seeds:
                    clean = runs[(seed, rule, None, 0.0)]
                    run = clean if fraction == 0 else runs[(seed, rule, attack, fraction)]
                    if "error" in run or "error" in clean:
                        per_seed.append(
                            {"seed": seed, "error": run.get("error", clean.get("error"))}
                        )
                        continue
                    honest = run["honest"]
                    accs = [run["nodes"][n] for n in honest]
                    per_seed.append({
                        "seed": seed,
                        "accuracy": float(np.mean(accs)),
                        "clean_accuracy": float(np.mean([clean["nodes"][n] for n in honest])),
                        "accuracy_min": float(min(accs)),
                        "seconds": run["seconds"],
                    })  # fmt: skip
                ok = [p for p in per_seed if "error" not in p]
                full = len(ok) == len(per_seed)
                cell: dict[str, Any] = {
                    "attack": attack,
                    "rule": rule,
                    "byzantine_fraction": fraction,
                    "accuracy": float(np.mean([p["accuracy"] for p in ok])) if full else None,
                    "clean_accuracy": float(np.mean([p["clean_accuracy"] for p in ok]))
                    if full
                    else None,
                    "accuracy_min": min(p["accuracy_min"] for p in ok) if full else None,
                    "seconds": float(sum(p["seconds"] for p in ok)) if ok else None,
                    "per_seed": per_seed,
                }
                drop = _drop(cell)
                cell["drop_points"] = None if drop is None else 100 * drop
                cells.append(cell)
    return cells


# -- tables and the report --------------------------------------------------------------------


def _fractions(results: dict[str, Any]) -> list[float]:
    return sorted({c["byzantine_fraction"] for c in results["cells"] if c["byzantine_fraction"]})


def _grid(results: dict[str, Any]) -> tuple[list[str], list[tuple[str, float]], dict[Any, Any]]:
    cells = results["cells"]
    rules = list(dict.fromkeys(c["rule"] for c in cells))
    attacks = list(dict.fromkeys(c["attack"] for c in cells))
    rows = [(a, f) for a in attacks for f in _fractions(results)]
    by_key = {(c["attack"], c["byzantine_fraction"], c["rule"]): c for c in cells}
    return rules, rows, by_key


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}"


def _cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None or cell["accuracy"] is None:
        return "failed" if cell is not None else "-"
    return f"{_pct(cell['accuracy'])} ({0.0 - cell['drop_points']:+.1f})"


def cells_table(results: dict[str, Any]) -> Table:
    rules, rows, by_key = _grid(results)
    table = bench_table(
        "medswarm bench robustness",
        ("attack", "byzantine", *rules),
        caption="honest nodes' mean final accuracy (%), in brackets the points against the "
        "same rule's clean run over the same nodes; first row: the clean runs (all nodes).",
        left=("attack",),
    )
    table.add_row("none", "0%", *(_pct(results["clean"][r]["accuracy"]) for r in rules))
    for attack, fraction in rows:
        table.add_row(
            attack,
            f"{fraction:.0%}",
            *(_cell_text(by_key.get((attack, fraction, r))) for r in rules),
        )
    return table


# Colour classes of the heat map: the drop in points against the clean run.
BOUNDS = (2.0, 5.0, 10.0, 20.0)
COLOURS = ("#1a9850", "#fee08b", "#fc8d59", "#d73027", "#7f0000")


def heatmap(results: dict[str, Any], path: Path) -> Path:
    """Rows: attack x fraction; columns: rules; colour: the drop against the clean run."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    rules, rows, by_key = _grid(results)
    drops = np.full((len(rows), len(rules)), np.nan)
    for i, (attack, fraction) in enumerate(rows):
        for j, rule in enumerate(rules):
            cell = by_key.get((attack, fraction, rule))
            if cell is not None and cell["drop_points"] is not None:
                drops[i, j] = cell["drop_points"]
    fig = Figure(figsize=(1.3 * len(rules) + 2.5, 0.42 * len(rows) + 2.2))
    ax = fig.add_subplot()
    cmap = ListedColormap(COLOURS).with_extremes(bad="#bbbbbb")
    # Each drop to its class (0: at most BOUNDS[0] points, ...): one colour per class.
    classes = np.ma.masked_invalid(
        np.where(np.isnan(drops), np.nan, np.digitize(drops, BOUNDS, right=True))
    )
    image = ax.imshow(classes, cmap=cmap, vmin=-0.5, vmax=len(COLOURS) - 0.5, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(rules)):
            value = drops[i, j]
            text = "failed" if math.isnan(value) else f"{0.0 - value:+.1f}"
            dark = not math.isnan(value) and value > BOUNDS[2]
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")  # fmt: skip
    recommended = results.get("recommended_rule")
    labels = [
        f"{r}{' *' if r == recommended else ''}\nclean {_pct(results['clean'][r]['accuracy'])}"
        for r in rules
    ]
    ax.set_xticks(range(len(rules)), labels, fontsize=8, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [f"{a} {f:.0%}" for a, f in rows], fontsize=8)
    ax.set_title(
        "Honest nodes' mean accuracy: points against the clean run\n"
        + (f"* recommended: {recommended}" if recommended else "no rule recommended"),
        fontsize=9,
    )
    bar = fig.colorbar(image, ax=ax, ticks=range(len(COLOURS)))
    edges = [f"{b:g}" for b in BOUNDS]
    middle = [f"{a}-{b}" for a, b in zip(edges, edges[1:], strict=False)]
    names = [f"<= {edges[0]}", *middle, f"> {edges[-1]}"]
    bar.ax.set_yticklabels(names, fontsize=8)
    bar.set_label("drop (points)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)  # a bare Figure renders with Agg, no pyplot
    return path


def write_report(results: dict[str, Any], json_path: Path) -> list[Path]:
    """The heat map (PNG) and a report (Markdown and self-contained HTML) beside the JSON."""
    from sim.report import (
        Block,
        Bullets,
        Heading,
        Image,
        Paragraph,
        render_html,
        render_markdown,
    )
    from sim.report import Table as ReportTable

    png = heatmap(results, json_path.with_suffix(".png"))
    rules, rows, by_key = _grid(results)
    rec = results["recommendation"]
    settings = results["settings"]
    table_rows = [["none", "0%", *(_pct(results["clean"][r]["accuracy"]) for r in rules)]]
    table_rows += [
        [a, f"{f:.0%}", *(_cell_text(by_key.get((a, f, r))) for r in rules)] for a, f in rows
    ]
    failing = [
        f"{r}: " + ", ".join(_failure_text(f) for f in found)
        for r, found in rec["failures"].items()
        if found
    ]
    blocks: list[Block] = [
        Heading("medswarm bench robustness: attacks x merge rules", 1),
        Paragraph(
            f"{settings['scenario']}; {settings['nodes']} nodes, {settings['topology']}, "
            f"{settings['rounds']} rounds, seeds {settings['seeds']}, {settings['backend']} "
            f"backend. Accuracy: {settings['accuracy']}."
        ),
        Paragraph(
            f"Recommended rule: {rec['rule'] or 'none'}. Criterion: {rec['criterion']}. "
            f"{rec['reason']}."
        ),
        Image(png, "heat map: drop against the clean run per attack, fraction and rule"),
        ReportTable(header=["attack", "byzantine", *rules], rows=table_rows),
        Heading("Where each rule falls more than the margin"),
        Bullets(failing or ["every rule is within the margin everywhere"]),
        Heading("Settings"),
        Bullets(
            [f"{r}: {json.dumps(p)}" for r, p in results["rules"].items()]
            + [f"{r}: no cell: {why}" for r, why in results["skipped_rules"].items()]
            + [f"attack {a}: {json.dumps(p)}" for a, p in results["attacks"].items()]
            + [
                f"seed {s}, {float(f):.0%}: attackers {', '.join(who)}; Byzantine neighbours "
                f"of an honest node: max {results['byzantine_neighbours'][s][f]['max']}, "
                f"{results['byzantine_neighbours'][s][f]['honest_nodes_with_more_than_1']} "
                "honest nodes with more than 1"
                for s, by_fraction in results["attackers"].items()
                for f, who in by_fraction.items()
            ]
            + [f"bench took {results['total_seconds']:.0f} s"]
        ),
    ]
    md = json_path.with_suffix(".md")
    html = json_path.with_suffix(".html")
    md.write_text(render_markdown(blocks))
    html.write_text(render_html(blocks, "medswarm bench robustness"))
    return [png, md, html]
