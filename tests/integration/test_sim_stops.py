"""The simulator stops cleanly and early: a node that fails at start-up stops the run at once,
naming it with its log's last lines; SIGTERM to `medswarm sim run` stops its nodes as Ctrl-C
does. Both on the process backend, with real node processes."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import sim.run
from sim.local_swarm import HEART_DISEASE, REPO_ROOT, SwarmError
from sim.run import run_scenario

pytestmark = pytest.mark.integration

SCENARIO = """
name = "stops"
rounds = {rounds}

[data]
schema = "{data}/schema.toml"
[data.sites]
cleveland = "{data}/processed.cleveland.data"
hungarian = "{data}/processed.hungarian.data"

[topology]
kind = "full"
"""


def scenario(folder: Path, rounds: int) -> Path:
    path = folder / "scenario.toml"
    path.write_text(SCENARIO.format(rounds=rounds, data=HEART_DISEASE))
    return path


def test_a_node_failing_at_start_up_stops_the_run_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_init = sim.run.init_swarm

    def init_with_a_loose_key(folder: Path, *args: Any, **kwargs: Any) -> list[Path]:
        configs = real_init(folder, *args, **kwargs)
        (folder / "nodes" / "hungarian" / "x25519.key").chmod(0o644)  # the node refuses it
        return configs

    monkeypatch.setattr(sim.run, "init_swarm", init_with_a_loose_key)
    with pytest.raises(SwarmError) as info:
        run_scenario(scenario(tmp_path, 500), tmp_path / "out", Console(quiet=True))
    # The node's log is wrapped at its console's width, where the paths (as long as pytest's
    # temporary folder) happen to cross it: compare with the line breaks as spaces.
    message = " ".join(str(info.value).split())
    assert message.startswith("node hungarian failed at start-up (exit code 2")
    assert "the last lines of its log:" in message
    assert "X25519 masking key file has mode 644; expected 600 (chmod 600)" in message
    # Only the node that failed is named: its peer, waiting for it at start-up, was stopped
    # rather than left to time out and be reported as failed too.
    assert "cleveland" not in message


def _processes_running(text: str) -> list[int]:
    """The processes (not zombies) whose command line mentions `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_sigterm_stops_the_simulator_and_its_nodes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "medswarm", "sim", "run", str(scenario(tmp_path, 2000))]
    simulator = subprocess.Popen(
        [*command, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    nodes: list[int] = []
    try:
        records = [out / "nodes" / n / "out" / "metrics.jsonl" for n in ("cleveland", "hungarian")]
        give_up = time.monotonic() + 120  # a guard against a hang, not a measurement
        while not all(p.exists() and p.stat().st_size for p in records):
            assert simulator.poll() is None, simulator.communicate()[1].decode()[-2000:]
            assert time.monotonic() < give_up, "the nodes never finished a round"
            time.sleep(0.2)
        nodes = _processes_running(str(out / "nodes"))
        assert len(nodes) == 2  # both node processes, mid-run
        simulator.send_signal(signal.SIGTERM)
        _, err = simulator.communicate(timeout=60)
        assert simulator.returncode != 0
        assert _processes_running(str(out / "nodes")) == [], err.decode()[-2000:]
    finally:
        for pid in [simulator.pid, *nodes]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        simulator.wait()
