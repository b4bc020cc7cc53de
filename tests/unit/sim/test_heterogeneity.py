"""The heterogeneity section: own-site and all-site scores, their means over seeds, the
scenario keys that go with it and the report's table and paired tests."""

import pytest

from node.training import EvalResult
from sim.heterogeneity import over_seeds, site_scores
from sim.report import _heterogeneity, render_markdown
from sim.scenario import ScenarioError, load_scenario
from tests.unit.sim.test_scenario import BASE, write


def _e(accuracy: float, auc: float | None) -> EvalResult:
    return EvalResult(accuracy=accuracy, auc=auc, loss=0.5, n=10)


def test_own_site_is_the_diagonal_and_all_site_the_row_s_mean():
    matrix = {
        "a": {"a": _e(0.9, 0.8), "b": _e(0.5, 0.6)},
        "b": {"a": _e(0.7, None), "b": _e(0.8, 0.9)},  # a's split with one class: no AUC
    }
    scores = site_scores(matrix)
    assert scores["per_site"]["a"] == {
        "own_accuracy": 0.9,
        "own_auc": 0.8,
        "all_accuracy": pytest.approx(0.7),
        "all_auc": pytest.approx(0.7),
    }
    assert scores["per_site"]["b"]["all_auc"] == pytest.approx(0.9)
    assert scores["mean"]["own_accuracy"] == pytest.approx(0.85)
    assert scores["mean"]["all_auc"] == pytest.approx(0.8)


def _seed(personalized: float, swarm: float, local: float) -> dict:
    def method(acc: float) -> dict:
        return site_scores({"a": {"a": _e(acc, 0.8)}, "b": {"b": _e(acc - 0.1, 0.7)}})

    return {
        "personalize": "bias",
        "personalized_swarm": method(personalized),
        "swarm": method(swarm),
        "local_only": method(local),
    }


def test_seeds_are_averaged_and_compared_pairwise_in_the_report():
    runs = [_seed(0.9, 0.8, 0.85), _seed(0.92, 0.81, 0.84), _seed(0.88, 0.8, 0.86)]
    averaged = over_seeds(runs)
    assert averaged["personalized_swarm"]["per_site"]["a"]["own_accuracy"] == pytest.approx(0.9)
    assert averaged["swarm"]["mean"]["own_accuracy"] == pytest.approx((0.8 + 0.81 + 0.8) / 3 - 0.05)
    assert averaged["local_only"]["seeds"] == 3
    summaries = [{"seed": i, "heterogeneity": r} for i, r in enumerate(runs)]
    text = render_markdown(_heterogeneity(summaries[-1], summaries))
    assert "means over 3 seeds" in text
    assert "| a | personalized swarm | 0.900 | 0.800 |" in text
    assert "personalized swarm minus local only: +0.0500 over 3 seeds (paired t-test" in text
    # Without the section (no personalization) the report has none.
    assert _heterogeneity({"seed": 0}, None) == []


def test_shared_swarm_needs_personalization_and_personalization_refuses_cross_site(tmp_path):
    with pytest.raises(ScenarioError, match="baselines.shared_swarm: .* swarm.personalize"):
        load_scenario(write(tmp_path, BASE + "\n[baselines]\nshared_swarm = true\n"))
    personalized = BASE + '\n[swarm]\npersonalize = "bias"\n'
    with pytest.raises(ScenarioError, match="evaluation.cross_site"):
        load_scenario(write(tmp_path, personalized + "\n[evaluation]\ncross_site = true\n"))
    with pytest.raises(ScenarioError, match="privacy.audit"):
        load_scenario(write(tmp_path, personalized + "\n[privacy]\nsecure_aggregation = false\n"))
    scenario = load_scenario(write(tmp_path, personalized + "\n[baselines]\nshared_swarm = true\n"))
    assert scenario.swarm.personalize == "bias" and scenario.baselines.shared_swarm
