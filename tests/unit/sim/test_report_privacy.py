"""The report's Privacy section and the terminal's privacy line: each hospital's budget and
the membership-inference audit, beside the run without DP-SGD when there is one."""

from typing import Any

from sim.report import console_summary, write_report
from tests.unit.sim.test_report import CONSENSUS, NODES, PER_NODE, summary


def private_summary(without_dp: bool) -> dict[str, Any]:
    s = summary(chain=False)
    rows = {
        n: {
            "epsilon": 2.5 + i, "delta": 1e-5, "budget": 8.0, "retired_at": 7 if i == 2 else None,
            "accuracy": 0.75, "mia_auc": 0.51 + 0.01 * i, "mia_auc_calibrated": 0.5,
        }
        for i, n in enumerate(NODES)
    }  # fmt: skip
    for i, n in enumerate(NODES):
        s["nodes"][n]["epsilon"] = 2.5 + i
    s["privacy"] = {
        "secure_aggregation": True,
        "nodes": rows,
        "mean_mia_auc": 0.52,
        "mean_mia_auc_calibrated": 0.5,
        "max_epsilon": 4.5,
    }
    if without_dp:
        s["privacy"]["without_dp"] = {
            "mean_accuracy": 0.79, "mean_auc": 0.85, "mean_mia_auc": 0.61,
            "mean_mia_auc_calibrated": 0.66,
            "nodes": {n: {"accuracy": 0.79, "mia_auc": 0.61, "mia_auc_calibrated": 0.66}
                      for n in NODES},
        }  # fmt: skip
    return s


def test_the_privacy_section_shows_budgets_attacks_and_the_run_without_dp(tmp_path):
    write_report(tmp_path, private_summary(True), PER_NODE, CONSENSUS)
    md = (tmp_path / "report.md").read_text()
    assert "## Privacy" in md
    assert (
        "| va | 4.50 (spent at round 7) | 1.0e-05 | 0.750 | 0.530 | 0.500 | 0.790 | 0.610 |" in md
    )
    assert "| mean |  |  | 0.750 | 0.520 | 0.500 | 0.790 | 0.610 | 0.660 |" in md
    assert "an upper bound" in md  # secure aggregation: a real neighbour saw only sums
    assert "| epsilon |" in md.split("## Privacy")[0]  # the hospitals table has the budget


def test_no_privacy_section_without_a_privacy_scenario(tmp_path):
    write_report(tmp_path, summary(chain=False), PER_NODE, CONSENSUS)
    assert "Privacy" not in (tmp_path / "report.md").read_text()


def test_the_terminal_says_the_attack_auc_with_and_without_dp():
    lines = [x for x in console_summary(private_summary(True)) if isinstance(x, str)]
    assert any(
        "attack AUC 0.520" in x and "without DP-SGD 0.610, accuracy 0.790" in x for x in lines
    )
