"""`medswarm sim run --backend docker` for real: Debian's engine (started if none runs), the
images (built if missing), Anvil and four heart-disease nodes in containers on an internal
network, one node killed and restarted, one cut off the network and connected again. The run
must match the process backend on the same seed, pass the audit and leave nothing behind, also
when it is stopped with Ctrl-C while a container is `docker pause`d (a pause in the main run
moved the two backends' accuracies apart: its timing against the restart differs between them).

If no engine can be started or the images cannot be built, these tests fail with the reason;
they never skip.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from node.metrics import read_records
from sim.docker_env import ENGINE_SCRIPT, LABEL, DockerError, build_images, engine
from sim.local_swarm import HEART_DISEASE
from sim.run import run_scenario

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 12
CUT = ("switzerland", 6, 8)  # cut off the network in rounds 6 to 8
PAUSED = ("hungarian", 2, 150)  # the Ctrl-C test's: frozen until the Ctrl-C comes
SCENARIO = f"""
name = "docker-e2e"
seeds = [3]
rounds = {ROUNDS}

[data]
schema = "{{data}}/schema.toml"
[data.sites]
cleveland = "{{data}}/processed.cleveland.data"
hungarian = "{{data}}/processed.hungarian.data"
switzerland = "{{data}}/processed.switzerland.data"
va = "{{data}}/processed.va.data"

[topology]
kind = "full"

[chain]
backend = "anvil"
rounds_per_epoch = 4

[baselines]
local_only = false
centralized = false
fedavg = false

# Rounds here take well under the supervisor's 0.3 s poll; a slow node paces them so that
# each fault lands within a round or so of where the scenario puts it.
[[faults]]
kind = "slow"
node = "cleveland"
delay_seconds = 0.5

[[faults]]
kind = "kill"
node = "va"
at = 3
restart = 5

[[faults]]
kind = "partition"
groups = [["cleveland", "hungarian", "va"], ["{CUT[0]}"]]
from = {CUT[1]}
to = {CUT[2]}
"""
PAUSE = f"""
[[faults]]
kind = "pause"
node = "{PAUSED[0]}"
from = {PAUSED[1]}
to = {PAUSED[2]}
"""


def _engine_and_images(log: Path):
    """The engine (started with scripts/docker-engine.sh if none answers) and the images
    (built, or brought up to date); a failure fails the test with the scripts' own words."""
    try:
        client = engine()
    except DockerError as first:
        run = subprocess.run(["bash", str(ENGINE_SCRIPT)], capture_output=True, text=True, cwd=REPO)
        if run.returncode != 0:
            pytest.fail(
                f"no Docker engine ({first}) and {ENGINE_SCRIPT} could not start one "
                f"(exit {run.returncode}):\n{run.stdout}{run.stderr}"
            )
        client = engine()
    try:  # always through the (idempotent, cached) build: an older image would test old code
        build_images(log, reason="for the source under test")
    except DockerError as exc:
        pytest.fail(f"the images could not be built: {exc}")
    return client


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return _engine_and_images(tmp_path_factory.mktemp("docker") / "build.log")


@pytest.fixture(scope="module")
def runs(client, tmp_path_factory):
    """The same scenario and seed on the process and the docker backend."""
    folder = tmp_path_factory.mktemp("e2e")
    scenario = folder / "scenario.toml"
    scenario.write_text(SCENARIO.replace("{data}", str(HEART_DISEASE)))
    quiet = Console(quiet=True)
    began = time.perf_counter()
    [docker] = run_scenario(scenario, folder / "docker", quiet, backend="docker")
    docker_seconds = time.perf_counter() - began
    [process] = run_scenario(scenario, folder / "process", quiet, backend="process")
    print(f"docker run {docker_seconds:.0f}s; mean accuracy docker {docker['mean']['accuracy']:.4f}"
          f", process {process['mean']['accuracy']:.4f}")  # fmt: skip
    return folder, docker, process


def test_docker_matches_the_process_backend_and_the_audit_passes(runs):
    _, docker, process = runs
    assert docker["backend"] == "docker" and process["backend"] == "process"
    gap = abs(docker["mean"]["accuracy"] - process["mean"]["accuracy"])
    assert gap <= 0.02, (docker["mean"], process["mean"])
    assert docker["mean"]["accuracy"] > 0.7
    ledger = docker["ledger"]
    assert ledger["audit_ok"], ledger["findings"]
    assert ledger["models_checked"] > 0
    assert ledger["finalized_epochs"], "no epoch was settled"
    assert all(m["epochs_scored"] > 0 for m in ledger["members"].values())


def test_the_killed_container_restarts_from_its_checkpoint(runs):
    folder, _, _ = runs
    records = read_records(folder / "docker" / "nodes" / "va" / "out" / "metrics.jsonl")
    assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))
    resumed = [r for r in records if "resumed_from" in r]
    assert [r["resumed_from"] for r in resumed] in ([3], [2])  # held after round 3 till killed
    swarm = json.loads((folder / "docker" / "docker.json").read_text())
    assert len(swarm["nodes"]["va"]["start_seconds"]) == 2  # one container, started twice
    assert len(swarm["nodes"]["cleveland"]["start_seconds"]) == 1
    log = (folder / "docker" / "nodes" / "va" / "node.log").read_text()
    assert f"va: {ROUNDS} rounds" in log  # the container's log, saved after the run


def test_the_cut_container_reaches_nobody_until_it_is_connected_again(runs):
    folder, _, _ = runs
    name, start, end = CUT
    records = read_records(folder / "docker" / "nodes" / name / "out" / "metrics.jsonl")
    by_round = {r["round"]: r for r in records}
    assert len(by_round) == ROUNDS
    # The cut lands once the node has finished round start - 1 (polled), so within a
    # round or two of `start`; while it lasts, nobody answers.
    cut = [r for r in range(start, end + 2) if not by_round[r]["neighbours_reached"]]
    assert cut, [(r, by_round[r]["neighbours_reached"]) for r in range(start, end + 2)]
    assert by_round[start - 2]["neighbours_reached"] != []  # connected before
    final = by_round[ROUNDS]
    assert len(final["neighbours_reached"]) == final["neighbours_total"] == 3  # and after
    swarm = json.loads((folder / "docker" / "docker.json").read_text())
    assert set(swarm["nodes"]) == {"cleveland", "hungarian", "switzerland", "va"}


def test_nothing_is_left_behind(runs, client):
    folder, _, _ = runs
    run_id = json.loads((folder / "docker" / "docker.json").read_text())["run_id"]
    label = {"label": f"{LABEL}={run_id}"}
    assert client.containers.list(all=True, filters=label) == []
    assert client.networks.list(filters=label) == []
    for name in ("cleveland", "va"):
        out = folder / "docker" / "nodes" / name / "out"
        assert out.stat().st_uid == os.getuid()  # given back after the run


def test_ctrl_c_removes_every_container_and_network_a_paused_one_too(client, tmp_path):
    scenario = tmp_path / "scenario.toml"
    text = SCENARIO.replace("{data}", str(HEART_DISEASE)).replace(
        f"rounds = {ROUNDS}", "rounds = 200"
    )
    scenario.write_text(text + PAUSE)  # paused after round 1 for long: Ctrl-C comes meanwhile
    err = tmp_path / "stderr.txt"
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "medswarm", "sim", "run", str(scenario), "--out", str(out),
           "--backend", "docker"]  # fmt: skip
    with err.open("wb") as sink:
        child = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 300
            frozen = f"{PAUSED[0]} frozen after round"
            while frozen not in err.read_text() and child.poll() is None:
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.5)
            assert child.poll() is None, err.read_text()
            run_id = err.read_text().split("docker: run ", 1)[1].split()[0]
            [paused] = client.containers.list(
                all=True, filters={"label": [f"{LABEL}={run_id}", f"medswarm.node={PAUSED[0]}"]}
            )
            assert paused.status == "paused"  # docker's own pause, not a stand-in
            os.killpg(child.pid, signal.SIGINT)
            child.wait(timeout=120)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
    text = err.read_text()
    run_id = text.split("docker: run ", 1)[1].split()[0]
    label = {"label": f"{LABEL}={run_id}"}
    assert client.containers.list(all=True, filters=label) == [], text
    assert client.networks.list(filters=label) == [], text
