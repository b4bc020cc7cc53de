"""`medswarm bench robustness` end to end on a tiny table (8 breast-cancer nodes, 2 rounds, two
rules, one attack at one fraction, inproc): the JSON has the issue's shape, the cells are the
runs' honest nodes, and the recommended rule is the one the cells give."""

import json

import pytest
from rich.console import Console

from medswarm.bench.robustness import recommend, run_robustness_bench, write_report

pytestmark = pytest.mark.integration

CELL_KEYS = {"attack", "rule", "byzantine_fraction", "accuracy", "clean_accuracy"}


def test_a_tiny_table_has_the_issue_s_shape(tmp_path):
    console = Console(record=True, width=200)
    results = run_robustness_bench(
        console, rounds=2, seeds=[0], attacks=["sign_flip"], rules=["metropolis", "median"],
        fractions=[0.25], workers=1, keep=tmp_path / "runs", nodes=8,
    )  # fmt: skip
    results = json.loads(json.dumps(results))  # what --json writes
    assert results["errors"] == []
    cells = results["cells"]
    assert all(set(c) >= CELL_KEYS for c in cells)
    assert sorted((c["rule"], c["byzantine_fraction"]) for c in cells) == [
        ("median", 0.0), ("median", 0.25), ("metropolis", 0.0), ("metropolis", 0.25),
    ]  # fmt: skip
    assert {c["attack"] for c in cells} == {"sign_flip"}
    assert results["recommended_rule"] == recommend(cells)["rule"]
    assert results["recommended_rule"] in (None, "metropolis", "median")
    assert results["rules"]["median"]["byzantine"] == 1
    bad = results["attackers"]["0"]["0.25"]
    assert len(bad) == 2
    for c in cells:
        assert 0 <= c["accuracy"] <= 1 and 0 <= c["clean_accuracy"] <= 1
        summary = json.loads(
            (tmp_path / "runs" / f"s0-{c['rule']}-"
             f"{'sign_flip-25' if c['byzantine_fraction'] else 'clean-0'}" / "summary.json")
            .read_text()
        )  # fmt: skip
        honest = [n for n, v in summary["nodes"].items() if v["honest"]]
        if c["byzantine_fraction"]:
            assert sorted(set(summary["nodes"]) - set(honest)) == bad
            assert c["accuracy"] == pytest.approx(summary["mean"]["accuracy"])
        else:
            assert (
                c["accuracy"] == c["clean_accuracy"] == pytest.approx(summary["mean"]["accuracy"])
            )
    assert "medswarm bench robustness" in console.export_text()
    paths = write_report(results, tmp_path / "out.json")
    assert [p.name for p in paths] == ["out.png", "out.md", "out.html"]
