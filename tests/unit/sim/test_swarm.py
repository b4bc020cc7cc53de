"""`swarm init` writes a scenario: the heart-disease example with the command's settings."""

import pytest

from node.errors import ConfigError
from sim.scenario import load_scenario
from sim.swarm import SCENARIO_FILE, init_swarm_scenario, without_baselines


def test_init_writes_the_example_with_the_settings(tmp_path):
    path = init_swarm_scenario(tmp_path / "hd", rounds=7, topology="full", model="logreg")
    scenario = load_scenario(path)
    assert path == tmp_path / "hd" / SCENARIO_FILE
    assert (scenario.rounds, scenario.topology.kind, scenario.model.name) == (7, "full", "logreg")
    assert scenario.chain.backend == "none"
    assert scenario.node_names() == ["cleveland", "hungarian", "switzerland", "va"]
    assert "# medswarm simulation scenario" in path.read_text()  # the example's comments stay
    chained = load_scenario(init_swarm_scenario(tmp_path / "chained", ledger=True))
    assert (chained.rounds, chained.topology.kind, chained.chain.backend) == (20, "ring", "anvil")


def test_init_refuses_an_existing_scenario_and_leaves_no_invalid_one(tmp_path):
    init_swarm_scenario(tmp_path)
    with pytest.raises(FileExistsError):
        init_swarm_scenario(tmp_path)
    with pytest.raises(ConfigError, match="topology.kind"):
        init_swarm_scenario(tmp_path / "bad", topology="star")
    assert not (tmp_path / "bad" / SCENARIO_FILE).exists()


def test_without_baselines_trains_none(tmp_path):
    scenario = without_baselines(load_scenario(init_swarm_scenario(tmp_path)))
    assert not any(scenario.baselines.model_dump(exclude={"target_accuracy", "cache"}).values())
