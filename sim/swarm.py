"""`medswarm swarm`: a swarm folder is a scenario (`scenario.toml`) and its run (`run/`).

`swarm init` writes the example scenario (the four heart-disease hospitals) with the command's
settings; `swarm up` runs it with `sim.run.run_scenario`, the simulator's one supervisor,
results and tables.
"""

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from node.init import with_settings
from sim.local_swarm import SwarmError
from sim.run import run_scenario
from sim.scenario import Scenario, ScenarioError, load_scenario, write_example

SCENARIO_FILE = "scenario.toml"
RUN_FOLDER = "run"


def init_swarm_scenario(
    folder: Path,
    *,
    rounds: int = 20,
    topology: str = "ring",
    model: str = "mlp",
    ledger: bool = False,
) -> Path:
    """Write folder/scenario.toml: the heart-disease example with these settings, checked by
    loading it (a file that does not load is not left behind)."""
    path = folder / SCENARIO_FILE
    folder.mkdir(parents=True, exist_ok=True)
    write_example(path)  # refuses to overwrite an existing scenario
    settings = {
        "rounds": rounds,
        "topology.kind": topology,
        "model.name": model,
        "chain.backend": "anvil" if ledger else "none",
    }
    path.write_text(with_settings(path.read_text(), settings))
    try:
        load_scenario(path)
    except ScenarioError:
        path.unlink()
        raise
    return path


def run_swarm_folder(
    folder: Path, console: Console, baselines: bool = True
) -> list[dict[str, Any]]:
    """Run folder/scenario.toml into folder/run (an earlier run there is replaced); without
    `baselines`, none is trained. Returns one summary per seed."""
    path = folder / SCENARIO_FILE
    if not path.is_file():
        raise SwarmError(f"{folder}: no {SCENARIO_FILE}; create one with `medswarm swarm init`")
    scenario = load_scenario(path)
    if not baselines:
        scenario = without_baselines(scenario)
    return run_scenario(scenario, folder / RUN_FOLDER, console, replace=True)


def without_baselines(scenario: Scenario) -> Scenario:
    off = dict.fromkeys(("local_only", "centralized", "fedavg", "fedavg_network"), False)
    return scenario.model_copy(update={"baselines": scenario.baselines.model_copy(update=off)})


def run_demo(out: Path, console: Console, rounds: int, ledger: bool) -> list[dict[str, Any]]:
    """`swarm demo`: init and up into `out`, replacing a previous demo there."""
    if (out / "swarm.json").exists():  # a demo run of the layout before scenarios
        console.print(f"replacing the previous demo run in {out}")
        shutil.rmtree(out)
    (out / SCENARIO_FILE).unlink(missing_ok=True)  # the previous demo's; its run goes in `up`
    init_swarm_scenario(out, rounds=rounds, topology="full", model="mlp", ledger=ledger)
    return run_swarm_folder(out, console)
