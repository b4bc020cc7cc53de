"""Federated analytics end to end: the shipped heart-disease query answered by four node
processes over libp2p equals pandas and statsmodels on the pooled records; a node killed
mid-query stops the answer with its name; `medswarm stats` refuses the differencing of two
overlapping filters."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from node.analytics.design import design
from node.dataset import load_frame, load_schema
from sim.local_swarm import HEART_DISEASE, init_swarm
from sim.run import run_scenario

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SITES = ["cleveland", "hungarian", "switzerland", "va"]
SCHEMA = load_schema(HEART_DISEASE / "schema.toml")


def pooled() -> pd.DataFrame:
    frames = [load_frame(HEART_DISEASE / f"processed.{s}.data", SCHEMA) for s in SITES]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analytics")
    scenario = ROOT / "sim/scenarios/heart-disease-analytics.toml"
    [summary] = run_scenario(scenario, folder / "out", Console(quiet=True))
    return folder / "out", summary


def test_every_node_releases_the_same_answer_equal_to_the_pooled_statistics(shipped):
    folder, summary = shipped
    assert summary["agreed"] and all(n["answered"] for n in summary["nodes"].values())
    assert (folder / "report.html").exists() and (folder / "forest.png").exists()
    answer = summary["answer"]
    rows = pooled()[lambda f: f["age"] >= 30]
    assert answer["rows"] == len(rows) and answer["sites"] == 4
    for name in ["age", "chol", "thalach", "oldpeak", "num"]:
        got = answer["stats"]["columns"][name]
        assert got["count"] == rows[name].count()
        assert got["mean"] == pytest.approx(rows[name].mean(), abs=1e-9)
        assert got["sd"] == pytest.approx(rows[name].std(), abs=1e-9)
    table = pd.crosstab(rows["cp"], rows["outcome"]).to_numpy().tolist()
    assert answer["stats"]["crosstabs"][0]["counts"] == table


def test_every_model_equals_statsmodels_on_the_pooled_records(shipped):
    import statsmodels.api as sm

    _, summary = shipped
    rows = pooled()[lambda f: f["age"] >= 30]
    families = {
        "binomial": sm.families.Binomial(),
        "poisson": sm.families.Poisson(),
        "gaussian": sm.families.Gaussian(),
    }
    for model in summary["answer"]["glm"]:
        assert "error" not in model, model
        d = design(rows, model["formula"])
        reference = sm.GLM(d.y, d.x, family=families[model["family"]]).fit(tol=1e-12)
        coefficients = model["coefficients"]
        assert [c["covariate"] for c in coefficients] == d.names
        np.testing.assert_allclose([c["coef"] for c in coefficients], reference.params, atol=1e-6)
        np.testing.assert_allclose([c["se"] for c in coefficients], reference.bse, atol=1e-6)
        assert model["n"] == len(d.y)


def test_a_node_killed_mid_fit_stops_the_answer_naming_it(tmp_path):
    """Statistics take the gate's and four sums: the eighth is the binomial model's third."""
    text = (ROOT / "sim/scenarios/heart-disease-analytics.toml").read_text()
    text = text.replace("../../data", str(ROOT / "data")).replace('"process"', '"inproc"')
    text += '\n[timeouts]\nstartup_seconds = 8\n\n[[faults]]\nkind = "kill"\nnode = "va"\nat = 8\n'
    (tmp_path / "s.toml").write_text(text)
    [summary] = run_scenario(tmp_path / "s.toml", tmp_path / "out", Console(quiet=True))
    assert summary["answer"] is None
    for name in ["cleveland", "hungarian", "switzerland"]:
        error = summary["nodes"][name]["error"]
        assert "nothing from va (" in error and "every member must take part" in error, error
        saved = json.loads((tmp_path / f"out/nodes/{name}/out/analytics.json").read_text())
        assert "answer" not in saved  # never a partial number


def _ask(swarm: Path, query: str, tmp: Path) -> list[subprocess.CompletedProcess]:
    """Every hospital runs `medswarm stats` with the same query, as a consortium would."""
    (tmp / "query.toml").write_text(query)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "medswarm",
                "stats",
                str(tmp / "query.toml"),
                "--config",
                str(swarm / "nodes" / s / "node.toml"),
                "--json",
                str(tmp / f"{s}.json"),
                "--set",
                "timeouts.startup_seconds=90",  # four processes starting on a loaded CI machine
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for s in SITES
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_stats_refuses_to_release_a_small_group_by_differencing_two_filters(tmp_path):
    """Ages >= 40, then >= 41: the difference would be the patients aged exactly 40, 1 to 4 of
    them at three of the hospitals. The first is answered, the second refused by those three."""
    sites = {s: HEART_DISEASE / f"processed.{s}.data" for s in SITES}
    init_swarm(tmp_path / "swarm", sites, HEART_DISEASE / "schema.toml", rounds=1, topology="ring")
    ask = '[[where]]\ncolumn = "age"\nmin = {age}\n[stats]\ncrosstabs = [["cp", "outcome"]]\n'
    first = _ask(tmp_path / "swarm", ask.format(age=40), tmp_path)
    assert all(p.returncode == 0 for p in first), [p.stderr for p in first]
    answer = json.loads((tmp_path / "va.json").read_text())
    assert answer["rows"] == int((pooled()["age"] >= 40).sum())
    second = _ask(tmp_path / "swarm", ask.format(age=41), tmp_path)
    for p in second:
        assert p.returncode == 2
        assert "refused by 3 hospital(s) under the disclosure rule" in " ".join(p.stderr.split())
