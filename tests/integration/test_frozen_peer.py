"""A frozen neighbour (SIGSTOP: still connected, never answers) costs each round at most the
fetch deadline; the others keep going, and the node catches up once it thaws."""

import os
import signal
import time

import pytest

from sim.local_swarm import init_swarm, start_node, stop_processes
from tests.integration.swarm_support import metrics, synthetic_sites

pytestmark = pytest.mark.integration

ROUNDS = 40
FETCH_SECONDS = 2.0
SETTINGS = {"timeouts.fetch_seconds": FETCH_SECONDS, "timeouts.connect_seconds": 1.0}


def test_frozen_neighbour_is_skipped_within_the_deadline(tmp_path):
    sizes = {"a": 120, "b": 150, "c": 180}
    sites = synthetic_sites(tmp_path / "data", sizes)
    swarm = tmp_path / "swarm"
    init_swarm(
        swarm,
        sites,
        tmp_path / "data" / "schema.toml",
        rounds=ROUNDS,
        topology="full",
        model="logreg",
    )
    procs = {n: start_node(swarm, n, SETTINGS) for n in sizes}
    try:
        deadline = time.monotonic() + 180
        while len(metrics(swarm, "c")) < 3:
            assert time.monotonic() < deadline, "swarm did not start"
            time.sleep(0.05)
        os.kill(procs["c"].pid, signal.SIGSTOP)
        frozen_at = len(metrics(swarm, "a"))
        time.sleep(4 * FETCH_SECONDS + 1)
        progressed = len(metrics(swarm, "a")) - frozen_at
        os.kill(procs["c"].pid, signal.SIGCONT)
        for name, proc in procs.items():
            assert proc.wait(timeout=300) == 0, (swarm / "nodes" / name / "node.log").read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        stop_processes(procs.values())

    # While c was frozen, a still finished rounds: it gave up on c at the fetch deadline.
    assert progressed >= 1
    c_id = metrics(swarm, "c")[0]["peer_id"]
    skipped = [r["failures"][c_id] for r in metrics(swarm, "a") if c_id in r["failures"]]
    assert skipped and all("no answer" in reason for reason in skipped), skipped
    for name in sizes:
        assert [r["round"] for r in metrics(swarm, name)] == list(range(1, ROUNDS + 1))
