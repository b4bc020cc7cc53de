"""`medswarm bench robustness` without running a swarm: the recommended rule is derived from
the cells, its scenarios load with the attackers and rule settings asked for, and the report
renders."""

import json

import pytest
from rich.console import Console

from medswarm.bench import robustness as rb
from sim.scenario import AlieAttack, SignFlip, load_scenario


def cell(rule, attack, fraction, accuracy, clean):
    return {
        "rule": rule,
        "attack": attack,
        "byzantine_fraction": fraction,
        "accuracy": accuracy,
        "clean_accuracy": clean,
        "drop_points": None if accuracy is None else 100 * (clean - accuracy),
    }


def table(spec):
    """Cells from {rule: (clean, {(attack, fraction): accuracy})}: clean over every node, and
    each attacked cell against the same clean accuracy."""
    attacks = sorted({a for _, found in spec.values() for a, _ in found})
    cells = []
    for rule, (clean, found) in spec.items():
        cells += [cell(rule, a, 0.0, clean, clean) for a in attacks]
        cells += [cell(rule, a, f, acc, clean) for (a, f), acc in found.items()]
    return cells


def everywhere(value):
    return {(a, f): value for a in ("alie", "noise") for f in (0.1, 0.2)}


def test_the_best_clean_rule_within_the_margin_everywhere_is_recommended():
    cells = table({
        "metropolis": (0.95, {**everywhere(0.94), ("alie", 0.2): 0.90}),  # best clean, fails
        "multi_krum": (0.93, everywhere(0.915)),  # 1.5 points: passes
        "median": (0.92, everywhere(0.92)),  # passes, worse clean
        "krum": (0.94, {**everywhere(0.94), ("noise", 0.1): 0.91}),  # fails at 10% only
    })  # fmt: skip
    found = rb.recommend(cells)
    assert found["rule"] == "multi_krum"
    assert found["passing"] == ["multi_krum", "median"]
    assert found["clean_accuracy"]["metropolis"] == 0.95
    assert found["worst_accuracy"] == {
        "metropolis": 0.90, "multi_krum": 0.915, "median": 0.92, "krum": 0.91,
    }  # fmt: skip
    [failure] = found["failures"]["metropolis"]
    assert failure["attack"] == "alie" and failure["byzantine_fraction"] == 0.2
    assert failure["drop_points"] == pytest.approx(5.0)
    assert [f["byzantine_fraction"] for f in found["failures"]["krum"]] == [0.1]
    assert found["fractions"] == [0.1, 0.2]
    assert "multi_krum meets the criterion" in found["reason"]
    # The margin decides: at 1 point multi_krum fails and median (no drop) is left.
    assert rb.recommend(cells, margin=0.01)["rule"] == "median"


def test_no_rule_is_recommended_when_none_holds_and_the_reason_names_the_failures():
    cells = table({
        "metropolis": (0.95, {**everywhere(0.94), ("alie", 0.2): 0.80}),
        "median": (0.92, {**everywhere(0.92), ("noise", 0.2): None}),  # a failed run
    })  # fmt: skip
    found = rb.recommend(cells)
    assert found["rule"] is None and found["passing"] == []
    assert found["failures"]["median"] == [
        {"attack": "noise", "byzantine_fraction": 0.2, "drop_points": None}
    ]
    assert "metropolis: alie at 20% (-15.0)" in found["reason"]
    assert "median: noise at 20% (failed run)" in found["reason"]


def test_a_rule_missing_an_attacked_cell_is_not_recommended():
    cells = table({"median": (0.92, everywhere(0.92)), "krum": (0.99, everywhere(0.99))})
    cells = [c for c in cells if not (c["rule"] == "krum" and c["attack"] == "noise")]
    assert rb.recommend(cells)["rule"] == "median"
    assert rb.recommend([c for c in cells if c["byzantine_fraction"] == 0])["rule"] is None


def test_the_table_has_the_issue_s_six_attacks_and_the_control_only_when_asked():
    assert rb.DEFAULT_ATTACKS == ("label_flip", "noise", "sign_flip", "alie", "ipm", "colluding")
    assert set(rb.DEFAULT_ATTACKS) < set(rb.ATTACKS) and "free_rider" in rb.ATTACKS


def test_attackers_are_seeded_and_nested():
    ten, twenty = rb.attackers(0, 0.1), rb.attackers(0, 0.2)
    assert len(ten) == 2 and len(twenty) == 4 and set(ten) <= set(twenty)
    assert rb.attackers(0, 0.2) == twenty and rb.attackers(1, 0.2) != twenty
    counts = rb.byzantine_neighbours(0, twenty)
    assert set(counts) == set(rb.node_names()) - set(twenty)
    assert sum(counts.values()) <= 4 * len(twenty)  # each attacker has 4 links


def test_the_rules_that_cannot_meet_their_bound_on_degree_4_are_found():
    problems = {name: rb.rule_problem(rule) for name, rule in rb.RULES.items()}
    assert problems.pop("bulyan") is not None  # n >= 4f + 3: six neighbours for f = 1
    assert all(p is None for p in problems.values()), problems


@pytest.mark.parametrize("attack", ["sign_flip", "colluding"])
def test_the_scenarios_load_with_the_attackers_and_the_rule_settings(tmp_path, attack):
    bad = rb.attackers(3, 0.2)
    path = tmp_path / "s.toml"
    path.write_text(rb.scenario_text(rb.RULES["multi_krum"], attack, bad, seed=3, rounds=7))
    s = load_scenario(path)
    assert (s.seeds, s.rounds, s.backend, s.workers) == ([3], 7, "inproc", 2)
    assert (s.data.nodes, s.data.split, s.data.alpha) == (20, "dirichlet", 0.3)
    assert (s.topology.kind, s.topology.degree, s.topology.schedule) == ("k_regular", 4, "all")
    assert (s.swarm.merge, s.swarm.byzantine) == ("multi_krum", 1)
    assert sorted(a.node for a in s.attacks) == bad
    kind = SignFlip if attack == "sign_flip" else AlieAttack
    assert all(isinstance(a, kind) for a in s.attacks)
    assert s.colluding_groups() == ({"byzantine": bad} if attack == "colluding" else {})
    assert s.data.test_fraction is None
    path.write_text(rb.scenario_text(rb.RULES["neighbourhood"], None, [], seed=0, workers=1,
                                     test_fraction=0.2))  # fmt: skip
    clean = load_scenario(path)
    assert clean.attacks == [] and clean.workers == 1 and clean.swarm.byzantine == 0
    assert clean.data.test_fraction == 0.2


def test_cells_compare_with_the_clean_run_over_the_same_honest_nodes():
    nodes = rb.node_names(4)
    clean = {"nodes": dict(zip(nodes, [1.0, 0.5, 0.8, 0.6], strict=True)), "honest": nodes}
    attacked = {"nodes": dict(zip(nodes, [0.9, 0.0, 0.7, 0.5], strict=True)),
                "honest": ["n00", "n02", "n03"]}  # fmt: skip
    runs = {
        (0, "median", None, 0.0): {**clean, "seconds": 1.0},
        (0, "median", "ipm", 0.25): {**attacked, "seconds": 2.0},
    }
    zero, hit = rb.build_cells(runs, [0], ["median"], ["ipm"], [0.25])
    assert zero["accuracy"] == zero["clean_accuracy"] == pytest.approx(0.725)
    assert hit["accuracy"] == pytest.approx(0.7) and hit["accuracy_min"] == 0.5
    assert hit["clean_accuracy"] == pytest.approx(0.8)  # n00, n02, n03 in the clean run
    assert hit["drop_points"] == pytest.approx(10.0)


def test_the_report_shows_the_table_and_the_heat_map(tmp_path):
    cells = table({"median": (0.92, everywhere(0.91)), "krum": (0.9, everywhere(0.7))})
    results = {
        "recommended_rule": "median",
        "recommendation": rb.recommend(cells),
        "cells": cells,
        "clean": {r: {"accuracy": c} for r, c in (("median", 0.92), ("krum", 0.9))},
        "rules": {"median": rb.RULES["median"].swarm(), "krum": rb.RULES["krum"].swarm()},
        "skipped_rules": {"bulyan": "needs six neighbours"},
        "attacks": {a: rb.ATTACKS[a] for a in ("alie", "noise")},
        "attackers": {"0": {"0.1": ["n01", "n02"]}},
        "byzantine_neighbours": {"0": {"0.1": {"max": 2, "honest_nodes_with_more_than_1": 1}}},
        "settings": {
            "scenario": "s",
            "nodes": 20,
            "topology": "t",
            "rounds": 3,
            "seeds": [0],
            "backend": "inproc",
            "accuracy": "a",
        },  # fmt: skip
        "total_seconds": 1.0,
    }
    json_path = tmp_path / "out.json"
    png, md, html = rb.write_report(results, json_path)
    assert png == tmp_path / "out.png" and png.read_bytes().startswith(b"\x89PNG")
    text = md.read_text()
    assert "Recommended rule: median" in text and "![heat map" in text
    assert "| alie | 20% | 91.0 (-1.0) | 70.0 (-20.0) |" in text
    assert "krum: alie at 10% (-20.0)" in text and "bulyan: no cell" in text
    assert "data:image/png;base64," in html.read_text()
    console = Console(record=True, width=200)
    console.print(rb.cells_table(json.loads(json.dumps(results))))
    assert "noise" in console.export_text()


def test_accuracies_come_from_the_validation_splits_or_the_common_test_set():
    summary = {
        "nodes": {"n00": {"accuracy": 0.5}, "n01": {"accuracy": 1.0}},
        "test": {"nodes": {"n00": {"accuracy": 0.9}, "n01": {"accuracy": 0.8}}},
    }
    assert rb._accuracies(summary, on_test=False) == {"n00": 0.5, "n01": 1.0}
    assert rb._accuracies(summary, on_test=True) == {"n00": 0.9, "n01": 0.8}
