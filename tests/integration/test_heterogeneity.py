"""A personalized swarm through the simulator (inproc backend, real libp2p): the local part is
never published, stays different at every hospital, and the report compares own-site and
all-site scores with the same swarm sharing everything and with local only, over two seeds."""

import json

import numpy as np
import pytest
from rich.console import Console
from safetensors.numpy import load_file

from sim.run import run_scenario
from tests.integration.swarm_support import final_params
from tests.integration.test_sim import SITES

pytestmark = pytest.mark.integration

SCENARIO = (
    """
name = "personalized-small"
backend = "inproc"
seeds = [0, 1]
rounds = 4
"""
    + SITES
    + """
[topology]
kind = "full"

[training]
prox_mu = 0.01

[swarm]
personalize = "bias"

[baselines]
local_only = true
shared_swarm = true
"""
)
BIAS = "layers.3.bias"


def test_a_personalized_swarm_keeps_its_bias_home_and_is_reported_beside_the_others(tmp_path):
    from sim.local_swarm import HEART_DISEASE

    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO.replace("{data}", str(HEART_DISEASE)))
    out = tmp_path / "out"
    summaries = run_scenario(scenario, out, Console(quiet=True))

    run = out / "seed-0"
    names = list(summaries[0]["nodes"])
    for n in names:  # what each node served its neighbours, every round
        published = sorted((run / "nodes" / n / "out" / "models").glob("round-*.safetensors"))
        assert len(published) == 4
        assert all(BIAS not in load_file(str(p)) for p in published), n
        assert "layers.3.weight" in load_file(str(published[-1]))
    finals = {n: final_params(run, n) for n in names}
    shared = {n: final_params(run / "shared-swarm", n) for n in names}
    # Personalized: one shared body (a complete graph agrees in a round), a bias per hospital.
    assert len({float(finals[n][BIAS][0]) for n in names}) == len(names)
    for n in names:
        np.testing.assert_allclose(
            finals[n]["layers.3.weight"], finals[names[0]]["layers.3.weight"], atol=1e-5
        )
    # Sharing everything: one bias for all.
    for n in names:
        np.testing.assert_allclose(shared[n][BIAS], shared[names[0]][BIAS], atol=1e-5)

    for summary in summaries:
        het = summary["heterogeneity"]
        assert het["personalize"] == "bias"
        for method in ("swarm", "personalized_swarm", "local_only"):
            assert set(het[method]["per_site"]) == set(names), method
        # Own-site is what each node itself measured on its validation split ...
        for n, node in summary["nodes"].items():
            own = het["personalized_swarm"]["per_site"][n]
            assert own["own_accuracy"] == pytest.approx(node["accuracy"], abs=1e-9)
            local = summary["baselines"]["local_only"]["per_node"][n]
            assert het["local_only"]["per_site"][n]["own_accuracy"] == local["accuracy"]
    # ... and the shared-swarm run's own accuracy its nodes' own.
    plain = json.loads((run / "shared-swarm" / "summary.json").read_text())
    for n, node in plain["nodes"].items():
        swarm = summaries[0]["heterogeneity"]["swarm"]["per_site"][n]
        assert swarm["own_accuracy"] == pytest.approx(node["accuracy"], abs=1e-9)

    report = (out / "report.md").read_text()
    assert "## Heterogeneity" in report and "means over 2 seeds" in report
    assert "mean own-site accuracy, personalized swarm minus local only" in report
