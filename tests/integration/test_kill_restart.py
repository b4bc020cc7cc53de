"""(c) A node killed mid-run: the others finish every round; restarted over its output folder,
it resumes from its checkpoint, rejoins, and finishes too."""

import json
import os
import signal
import time

import pytest

from node.checkpoint import load_checkpoint
from sim.local_swarm import HEART_DISEASE, HEART_SITES, init_swarm, start_node, stop_processes
from tests.integration.swarm_support import metrics, out_dir

pytestmark = pytest.mark.integration

ROUNDS = 150
VICTIM = "hungarian"
# A short fetch deadline: the neighbours give up on the killed node within seconds.
SETTINGS = {
    "training.epochs": 3,
    "timeouts.linger_seconds": 20,
    "timeouts.fetch_seconds": 5,
    "timeouts.connect_seconds": 2,
}


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def checkpoint_round(swarm) -> int:
    checkpoint = load_checkpoint(out_dir(swarm, VICTIM) / "checkpoint")
    return checkpoint.round if checkpoint else 0


def test_killed_node_is_skipped_then_resumes_from_its_checkpoint(tmp_path):
    swarm = tmp_path / "swarm"
    sites = {name: HEART_DISEASE / file for name, file in HEART_SITES.items()}
    init_swarm(swarm, sites, HEART_DISEASE / "schema.toml", rounds=ROUNDS, topology="ring")
    names = json.loads((swarm / "swarm.json").read_text())["nodes"]
    procs = {n: start_node(swarm, n, SETTINGS) for n in names}
    try:
        wait_until(lambda: checkpoint_round(swarm) >= 5, 180, "the victim's 5th checkpoint")
        victim_id = metrics(swarm, VICTIM)[0]["peer_id"]
        os.killpg(procs[VICTIM].pid, signal.SIGKILL)
        procs[VICTIM].wait()
        killed_at = time.time()
        resumed_from = checkpoint_round(swarm)
        assert 5 <= resumed_from < ROUNDS
        # Back only once a neighbour has given up on it: a node that returns within the
        # neighbours' fetch deadline is simply waited for.
        others = [n for n in names if n != VICTIM]
        wait_until(
            lambda: any(victim_id in r["failures"] for n in others for r in metrics(swarm, n)),
            120,
            "a neighbour to skip the killed node",
        )

        restarted = start_node(swarm, VICTIM, SETTINGS)
        procs[VICTIM] = restarted
        for name, proc in procs.items():
            assert proc.wait(timeout=300) == 0, (swarm / "nodes" / name / "node.log").read_text()
    finally:
        stop_processes(procs.values())

    for name in names:
        rounds = [r["round"] for r in metrics(swarm, name)]
        assert rounds == list(range(1, ROUNDS + 1)), name
    # The victim's ring neighbours noticed it was gone, skipped it and carried on.
    others = [r for n in names if n != VICTIM for r in metrics(swarm, n)]
    assert any(victim_id in r["failures"] for r in others)
    # Rounds up to the checkpoint were not redone; the rest ran after the restart.
    for record in metrics(swarm, VICTIM):
        if record["round"] <= resumed_from:
            assert record["time"] < killed_at
        else:
            assert record["time"] > killed_at
    # Back in the swarm: after the restart it merged with its neighbours again.
    after = [r for r in metrics(swarm, VICTIM) if r["round"] > resumed_from]
    assert any(r["neighbours_reached"] for r in after)
