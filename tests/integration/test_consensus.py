"""(a) Training off: six node processes on a ring converge to the sample-weighted average, also
when each gossips with one neighbour a round (a rotation of matchings)."""

import numpy as np
import pytest

from sim import run as sim_run
from sim.run import run_scenario
from tests.integration.swarm_support import (
    QUIET,
    final_params,
    flat,
    initial_params,
    metrics,
    synthetic_sites,
)

pytestmark = pytest.mark.integration

SIZES = {f"site{i}": rows for i, rows in enumerate([40, 80, 120, 160, 240, 400])}
ROUNDS = 100
SCENARIO = """
name = "consensus"
rounds = {rounds}
[data]
schema = "{schema}"
[data.sites]
{sites}
[topology]
kind = "ring"
schedule = "{schedule}"
[model]
name = "logreg"
[training]
epochs = 0
[timeouts]
linger_seconds = 5
[baselines]
local_only = false
centralized = false
fedavg = false
"""


@pytest.fixture
def distinct_inits(monkeypatch):
    """Each node starts from its own model (a scenario gives every node the run's seed), so
    there is an average to reach; and scores its model before the merge too."""
    make_plan = sim_run.make_plan

    def plan(*args):
        made = make_plan(*args)
        for i, name in enumerate(made.files):
            made.settings[name].update({"model.init_seed": i, "node.evaluate_local": True})
        return made

    monkeypatch.setattr(sim_run, "make_plan", plan)


@pytest.mark.parametrize("rotate", [False, True], ids=["every-neighbour", "matchings"])
def test_ring_of_six_reaches_the_sample_weighted_average(tmp_path, rotate, distinct_inits):
    sites = synthetic_sites(tmp_path / "data", SIZES)
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(
        SCENARIO.format(
            rounds=ROUNDS,
            schema=tmp_path / "data" / "schema.toml",
            sites="\n".join(f'{name} = "{path}"' for name, path in sites.items()),
            schedule="matchings" if rotate else "all",
        )
    )
    swarm = tmp_path / "run"
    run_scenario(scenario, swarm, QUIET)

    samples = {n: metrics(swarm, n)[-1]["train_samples"] for n in SIZES}
    assert len(set(samples.values())) == len(SIZES), "sample counts should all differ"
    initial = {n: flat(initial_params(swarm, n)) for n in SIZES}
    assert not np.allclose(initial["site0"], initial["site1"]), "inits should differ"
    total = sum(samples.values())
    target = sum(samples[n] * initial[n] for n in SIZES) / total
    plain_mean = sum(initial.values()) / len(initial)
    assert np.linalg.norm(plain_mean - target) > 1e-2 * np.linalg.norm(target)

    for name in SIZES:
        records = metrics(swarm, name)
        assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))
        assert {r["neighbours_total"] for r in records} == ({1} if rotate else {2})
        assert all(r["local"]["n"] == r["merged"]["n"] > 0 for r in records)
        error = np.linalg.norm(flat(final_params(swarm, name)) - target) / np.linalg.norm(target)
        assert error <= 1e-4, f"{name}: relative error {error:.2e}"
