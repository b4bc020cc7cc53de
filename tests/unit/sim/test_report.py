"""The run report: files written, self-contained HTML, optional plots, significance test."""

from __future__ import annotations

import base64
import io
import math
import re
from copy import deepcopy
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from sim.report import Table, console_summary, paired_test, render_markdown, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NODES = ["cleveland", "hungarian", "va"]


def records(name: str, rounds: int) -> list[dict[str, Any]]:
    acc = {"cleveland": 0.6, "hungarian": 0.55, "va": 0.5}[name]
    return [
        {
            "round": r,
            "time": 1000.0 + r,
            "node": name,
            "local": {"accuracy": acc, "auc": 0.6, "loss": 0.7, "n": 40},
            "merged": {"accuracy": acc + 0.02 * r, "auc": 0.7, "loss": 0.6, "n": 40},
            "neighbours_reached": [n for n in NODES if n != name],
            "bytes_sent": 1000 * r,
            "bytes_received": 1000 * r,
            "round_seconds": 0.1,
            "peak_rss_mb": 300.0,
        }
        for r in range(1, rounds + 1)
    ]


def summary(seed: int = 0, swarm: float = 0.75, local: float = 0.65, chain: bool = True):
    nodes = {
        name: {
            "accuracy": swarm,
            "auc": 0.8,
            "rows": 100 * (i + 1),
            "bytes_sent": 123_456,
            "peak_rss_mb": 310.0,
            "rounds_to_target": 4 if i else None,
            "contribution": 0.1 * (i + 1) if chain else None,
            "reward_eth": 0.5 * (i + 1) if chain else None,
        }
        for i, name in enumerate(NODES)
    }
    return {
        "scenario": "heart & four sites",
        "seed": seed,
        "backend": "eth-tester",
        "rounds": 5,
        "wall_seconds": 12.5,
        "rounds_wall_seconds": 4.25,
        "nodes": nodes,
        "mean": {"accuracy": swarm, "auc": 0.8},
        "baselines": {
            "local_only": {"mean_accuracy": local, "mean_auc": 0.7, "per_node": {}},
            "centralized": {"mean_accuracy": 0.78, "mean_auc": 0.85, "per_node": {}},
            "fedavg": {
                "mean_accuracy": 0.77,
                "mean_auc": 0.84,
                "wall_seconds": 3.2,
                "history": [
                    {"round": r, "mean_accuracy": 0.5 + 0.05 * r, "mean_auc": 0.8, "seconds": 0.1}
                    for r in range(1, 6)
                ],
            },
            "fedavg_network": {
                "mean_accuracy": 0.77,
                "mean_auc": 0.84,
                "wall_seconds": 9.5,
                "rounds_wall_seconds": 6.75,
                "per_node": {},
            },
        },
        "faults": ["kill va at round 2, restart at round 4"],
        "attacks": [],
        "target_accuracy": 0.65,
        "fault_windows": [{"label": "va down", "from": 2, "to": 4}],
        "ledger": LEDGER if chain else None,
    }


LEDGER = {
    "backend": "anvil",
    "contract": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    "finalized_epochs": [0, 1],
    "audit_ok": True,
    "findings": [],
    "models_checked": 12,
    "audit_command": "medswarm ledger audit --chain anvil --state run/chain/anvil-state.json",
}


PER_NODE = {name: records(name, 5) for name in NODES}
# Distance 0 in the last round: a log axis cannot show it, and the plot must not fail on it.
CONSENSUS = [{"round": r, "distance": 10.0**-r if r < 5 else 0.0} for r in range(1, 6)]


def seeds(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(n)
    return [
        summary(seed=s, swarm=0.75 + 0.02 * rng.standard_normal(), local=0.65) for s in range(n)
    ]


def test_writes_every_file(tmp_path):
    out = tmp_path / "report"
    written = write_report(out, summary(), PER_NODE, CONSENSUS)
    names = {p.name for p in written}
    assert names == {
        "accuracy.png",
        "consensus.png",
        "contribution.png",
        "rewards.png",
        "report.md",
        "report.html",
    }
    assert {p.name for p in out.iterdir()} == names
    for p in written:
        if p.suffix == ".png":
            assert p.read_bytes().startswith(PNG_MAGIC)


def test_markdown_links_the_plots_and_html_embeds_them(tmp_path):
    written = write_report(tmp_path, summary(), PER_NODE, CONSENSUS)
    pngs = [p for p in written if p.suffix == ".png"]
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for p in pngs:
        assert f"]({p.name})" in md
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(p.read_bytes() for p in pngs)
    assert ".png" not in page  # nothing refers to a file next to it


def test_both_documents_say_the_same(tmp_path):
    write_report(tmp_path, summary(), PER_NODE, CONSENSUS)
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for text in [
        "heart & four sites",
        "eth-tester",
        "FedAvg",
        "0.780",
        "3.2",
        "0.1000",
        "1.500000",
        "kill va at round 2",
        "Significance",
    ]:
        assert text in md
        assert text.replace("&", "&amp;") in page


def test_a_bar_in_a_cell_does_not_split_the_markdown_row():
    md = render_markdown([Table(["a", "b"], [["x|y", "1"]])])
    assert md.splitlines()[-1] == "| x\\|y | 1 |"


def test_plots_and_columns_that_need_the_chain_are_left_out_without_it(tmp_path):
    written = write_report(tmp_path, summary(chain=False), PER_NODE, CONSENSUS)
    assert {p.name for p in written} == {
        "accuracy.png",
        "consensus.png",
        "report.md",
        "report.html",
    }
    assert not (tmp_path / "contribution.png").exists()
    md = (tmp_path / "report.md").read_text()
    assert "contribution" not in md.lower() and "reward" not in md.lower()


def test_the_ledger_section_gives_the_audit_verdict_and_how_to_repeat_it(tmp_path):
    write_report(tmp_path, summary(), PER_NODE, CONSENSUS)
    md = (tmp_path / "report.md").read_text()
    assert "Chain anvil, contract 0x5FbDB2315678afecb367f032d93F642f64180aa3" in md
    assert "epochs finalized: 0, 1" in md and "12 model files: clean" in md
    assert f"`{LEDGER['audit_command']}`" in md

    s = summary()
    s["ledger"] = {
        **LEDGER,
        "backend": "ganache",
        "audit_ok": False,
        "findings": [{"kind": "x"}] * 2,
        "audit_command": None,
    }
    write_report(tmp_path, s, PER_NODE, CONSENSUS)
    md = (tmp_path / "report.md").read_text()
    assert "model files: 2 findings" in md and "lived only as long as the run" in md


def test_rewards_without_contributions_plot_rewards_only(tmp_path):
    s = summary()
    for n in s["nodes"].values():
        n["contribution"] = None
    names = {p.name for p in write_report(tmp_path, s, PER_NODE, CONSENSUS)}
    assert "rewards.png" in names and "contribution.png" not in names


def test_one_seed_says_a_test_needs_several(tmp_path):
    write_report(tmp_path, summary(), PER_NODE, CONSENSUS)
    md = (tmp_path / "report.md").read_text()
    assert "significance test needs several seeds" in md
    write_report(tmp_path, summary(), PER_NODE, CONSENSUS, seeds_summary=seeds(1))
    assert "significance test needs several seeds" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    ("n", "test"),
    [
        (2, "paired t-test"),
        (5, "paired t-test"),
        (6, "Wilcoxon signed-rank"),
        (9, "Wilcoxon signed-rank"),
    ],
)
def test_significance_picks_the_test_by_seed_count(tmp_path, n, test):
    runs = seeds(n)
    write_report(tmp_path, runs[0], PER_NODE, CONSENSUS, seeds_summary=runs)
    md = (tmp_path / "report.md").read_text()
    section = md.split("## Significance")[1]
    assert f"{test} over {n} seeds" in section
    match = re.search(r"p = ([0-9.]+)", section)
    assert match is not None
    p = float(match.group(1))
    assert 0.0 <= p <= 1.0
    swarm = [r["mean"]["accuracy"] for r in runs]
    mean_diff = np.mean(swarm) - 0.65
    assert f"mean difference {mean_diff:+.4f}" in section
    assert "seeds 0, 1" in md


def test_paired_t_test_matches_the_textbook_formula():
    swarm, local = [0.80, 0.74, 0.77, 0.79], [0.70, 0.71, 0.69, 0.72]
    d = np.subtract(swarm, local)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    result = paired_test(swarm, local)
    assert result.test == "paired t-test"
    assert result.statistic == pytest.approx(t)
    assert result.mean_difference == pytest.approx(d.mean())
    assert 0.0 < result.p_value < 0.05


def test_wilcoxon_with_every_seed_better_gives_the_exact_smallest_p():
    # Six differences of one sign: W- = 0, and the exact two-sided p is 2 / 2^6.
    swarm = [0.71, 0.73, 0.76, 0.70, 0.79, 0.74]
    local = [s - 0.01 * (i + 1) for i, s in enumerate(swarm)]
    result = paired_test(swarm, local)
    assert result.test == "Wilcoxon signed-rank"
    assert result.statistic == 0.0
    assert result.p_value == pytest.approx(2 / 2**6)


def test_identical_differences_have_no_test(tmp_path):
    result = paired_test([0.7, 0.8, 0.9], [0.6, 0.7, 0.8])
    assert math.isnan(result.p_value) and result.mean_difference == pytest.approx(0.1)
    runs = [summary(seed=s, swarm=0.75, local=0.65) for s in range(3)]
    write_report(tmp_path, runs[0], PER_NODE, CONSENSUS, seeds_summary=runs)
    assert "no test statistic is defined" in (tmp_path / "report.md").read_text()


def test_seeds_without_the_local_baseline_have_no_test(tmp_path):
    runs = seeds(3)
    del runs[1]["baselines"]["local_only"]
    write_report(tmp_path, runs[0], PER_NODE, CONSENSUS, seeds_summary=runs)
    assert "without the local-only baseline" in (tmp_path / "report.md").read_text()


def test_paired_test_needs_two_pairs():
    with pytest.raises(ValueError, match=">= 2 paired values"):
        paired_test([0.7], [0.6])


def test_empty_per_node_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="per_node is empty"):
        write_report(tmp_path, summary(), {}, CONSENSUS)
    assert not any(tmp_path.iterdir())


def test_missing_baselines_and_faults_still_report(tmp_path):
    s = deepcopy(summary(chain=False))
    del s["baselines"], s["fault_windows"]
    s["faults"] = []
    write_report(tmp_path, s, PER_NODE, [])
    md = (tmp_path / "report.md").read_text()
    assert "- none" in md and "FedAvg (" not in md


def test_the_baselines_table_compares_the_paces_from_round_2(tmp_path):
    write_report(tmp_path, summary(), PER_NODE, CONSENSUS)
    rows = [line for line in (tmp_path / "report.md").read_text().splitlines() if "|" in line]
    swarm = next(r for r in rows if r.startswith("| swarm"))
    network = next(r for r in rows if "FedAvg (server and clients over libp2p)" in r)
    assert "12.5" in swarm and "4.2" in swarm  # whole run, rounds 2 on
    assert "9.5" in network and "6.8" in network


def rendered(s: dict[str, Any]) -> str:
    console = Console(width=100, record=True, file=io.StringIO())
    for part in console_summary(s):
        console.print(part)
    return console.export_text()


def test_the_terminal_summary_gives_each_hospital_its_accuracy_contribution_and_reward():
    s = summary()
    s["baselines"]["local_only"]["per_node"] = {"va": {"accuracy": 0.612}}
    text = rendered(s)
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()}
    assert rows["va"][1:] == ["300", "0.750", "0.800", "0.612", "0.3000", "1.500"]
    assert rows["cleveland"][4] == "—"  # no local-only result for it
    assert "ledger audit passed; to repeat it: medswarm ledger audit" in text
    without_chain = rendered(summary(chain=False))
    assert "reward" not in without_chain and "ledger audit" not in without_chain


def test_a_common_test_set_gets_its_plot_and_its_last_round(tmp_path):
    s = summary()
    write_report(tmp_path, s, PER_NODE, CONSENSUS)
    assert not (tmp_path / "test.png").exists()
    assert "Common test set" not in (tmp_path / "report.md").read_text()
    s["test"] = {
        "per_round": [
            {"round": r, "mean": 0.6 + 0.01 * r, "min": 0.5, "max": 0.7 + 0.01 * r, "nodes": 3}
            for r in range(1, 6)
        ],
        "fedavg_per_round": [{"round": r, "accuracy": 0.62 + 0.01 * r} for r in range(1, 6)],
    }
    written = write_report(tmp_path, s, PER_NODE, CONSENSUS)
    assert tmp_path / "test.png" in written
    assert (tmp_path / "test.png").read_bytes().startswith(PNG_MAGIC)
    md = (tmp_path / "report.md").read_text()
    assert "Round 5: mean 0.650, min 0.500, max 0.750 over 3 nodes; FedAvg 0.670." in md
    assert "test.png" in md


def test_the_common_test_set_s_numbers_are_in_the_report_s_tables(tmp_path):
    s = summary()
    curve = [{"round": r, "accuracy": 0.6 + 0.01 * r, "auc": 0.7} for r in range(1, 6)]
    s["baselines"]["local_only"]["test"] = {"accuracy": 0.611, "auc": 0.622, "per_round": curve}
    s["baselines"]["centralized"]["test"] = {"accuracy": 0.733, "auc": 0.744, "per_round": curve}
    s["baselines"]["fedavg"]["test"] = {"accuracy": 0.755, "auc": 0.766, "per_round": curve}
    s["nodes"]["va"]["honest"] = False
    s["test"] = {
        "file": "/data/va.csv",
        "rows": 187,
        "dropped": {"duplicate": 2},
        "nodes": {
            "cleveland": {"accuracy": 0.701, "auc": 0.8},
            "hungarian": {"accuracy": 0.703, "auc": 0.8},
            "va": {"accuracy": 0.1, "auc": 0.2},  # not honest: not in the swarm's rows
        },
        "mean": {"accuracy": 0.702, "auc": 0.8},
        "consensus": {"accuracy": 0.777, "auc": 0.888, "loss": 0.5, "nodes": 2},
        "per_round": [
            {"round": r, "mean": 0.6, "min": 0.5, "max": 0.7, "nodes": 2} for r in range(1, 6)
        ],
        "fedavg_per_round": [{"round": h["round"], "accuracy": h["accuracy"]} for h in curve],
    }
    write_report(tmp_path, s, PER_NODE, CONSENSUS)
    md = (tmp_path / "report.md").read_text()
    assert "(/data/va.csv; 187 rows, cleaning dropped duplicate 2)" in md
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in md.splitlines()
            if line.startswith("| ")}  # fmt: skip
    assert rows["model (final)"] == ["test accuracy", "test AUC |"]
    assert rows["swarm nodes (mean)"] == ["0.702", "0.800 |"]
    assert rows["swarm nodes (min, max)"] == ["0.701, 0.703", " |"]
    assert rows["consensus model"] == ["0.777", "0.888 |"]
    assert rows["local only (mean over sites)"] == ["0.611", "0.622 |"]
    assert rows["centralized"][:2] == ["0.733", "0.744 |"]
    assert rows["FedAvg (one process)"][:2] == ["0.755", "0.766 |"]
    assert rows["cleveland"][3:5] == ["0.701", "0.800"]  # the hospitals' table: test columns
    assert rows["hospital"][3:5] == ["test accuracy", "test AUC"]


def test_a_run_without_validation_split_says_its_accuracy_is_on_the_test_set(tmp_path):
    s = summary()
    s["evaluated_on"] = "test"
    write_report(tmp_path, s, PER_NODE, CONSENSUS)
    md = (tmp_path / "report.md").read_text()
    assert "Final merged model on the common test set (no validation split)" in md
    assert "metrics on the common test set (no validation split)" in md
    assert "per hospital (common test set)" in rendered(s)
    assert "validation split, seed" not in md


def cross_site(on_chain: bool | None = True) -> dict[str, Any]:
    """va was killed: no row of its own, its model missing from the others'."""
    columns = [*NODES, "consensus"]
    accuracy = {n: {c: None if c == "va" else 0.5 + 0.01 * i for i, c in enumerate(columns)}
                for n in NODES[:2]}  # fmt: skip
    auc = {n: {c: None if c == "va" else 0.7 for c in columns} for n in NODES[:2]}
    row = {"rows": 40, "missing": ["va"], "digest": "ab" * 32, "digest_matches_row": True}
    nodes: dict[str, Any] = {n: {**row, "on_chain": on_chain} for n in NODES[:2]}
    nodes["va"] = {"skipped": "no cross_site.json: the node did not finish", "digest": None}
    return {"columns": columns, "accuracy": accuracy, "auc": auc, "nodes": nodes}


def test_the_cross_site_matrices_are_tables_with_what_each_row_lacks(tmp_path):
    s = summary()
    s["cross_site"] = cross_site()
    write_report(tmp_path, s, PER_NODE, CONSENSUS)
    md = (tmp_path / "report.md").read_text()
    assert "## Cross-site evaluation" in md and "### Accuracy" in md and "### AUC" in md
    header = "| validation split ↓ / model → | cleveland | hungarian | va | consensus |"
    assert md.count(header) == 2
    assert "| hungarian | 0.500 | 0.510 | — | 0.530 |" in md
    assert "| cleveland | 0.700 | 0.700 | — | 0.700 |" in md
    assert "2 of 2 rows match the sha256 of their canonical JSON; 2 equal the digest" in md
    assert "- va: no row: no cross_site.json: the node did not finish" in md
    assert "- cleveland: without the model of va" in md
    assert "Cross-site evaluation" in (tmp_path / "report.html").read_text()
    assert "cross-site evaluation: 2 of 3 hospitals' rows, each matching its digest, on chain" in (
        rendered(s)
    )
    s["cross_site"] = cross_site(on_chain=False)
    write_report(tmp_path, s, PER_NODE, CONSENSUS)
    md = (tmp_path / "report.md").read_text()
    assert "0 equal the digest" in md and "- hungarian: the digest on chain is not this row's" in md
    assert "NOT all digests on chain" in rendered(s)
    s["cross_site"] = cross_site(on_chain=None)  # no chain
    write_report(tmp_path, s, PER_NODE, CONSENSUS)
    assert "committed on chain" not in (tmp_path / "report.md").read_text()
    del s["cross_site"]
    write_report(tmp_path, s, PER_NODE, CONSENSUS)
    assert "Cross-site" not in (tmp_path / "report.md").read_text()
