"""(a) Training off: six node processes on a ring converge to the sample-weighted average, also
when each gossips with one neighbour a round (a rotation of matchings)."""

import numpy as np
import pytest

from sim.local_swarm import init_swarm, rotation_settings, run_processes, topology_edges
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


@pytest.mark.parametrize("rotate", [False, True], ids=["every-neighbour", "matchings"])
def test_ring_of_six_reaches_the_sample_weighted_average(tmp_path, rotate):
    sites = synthetic_sites(tmp_path / "data", SIZES)
    ring = topology_edges(len(SIZES), "ring")
    rotation = rotation_settings(ring, list(SIZES)) if rotate else {}
    extra = {
        name: {
            "training.epochs": 0,
            "model.init_seed": i,
            "timeouts.linger_seconds": 5,
            **rotation.get(name, {}),
        }
        for i, name in enumerate(SIZES)
    }
    swarm = tmp_path / "swarm"
    init_swarm(
        swarm,
        sites,
        tmp_path / "data" / "schema.toml",
        rounds=ROUNDS,
        topology=ring,
        model="logreg",
        extra=extra,
    )
    run_processes(swarm, QUIET, timeout=600)

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
