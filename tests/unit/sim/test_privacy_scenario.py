"""A scenario's [privacy]: which nodes get which node settings, and the combinations refused
with the key that is wrong."""

import pytest

from sim.run import make_plan, without_dp
from sim.scenario import ScenarioError, load_scenario
from tests.unit.sim.test_scenario import BASE, write

FULL = BASE.replace('kind = "ring"', 'kind = "full"')


def test_privacy_settings_go_to_the_named_nodes_and_their_sybils(tmp_path):
    text = FULL + (
        '\n[[attacks]]\nkind = "sybil"\nnode = "va"\n'
        '\n[privacy]\ntarget_epsilon = 3.0\nmax_grad_norm = 0.5\nnodes = ["va", "cleveland"]\n'
    )
    scenario = load_scenario(write(tmp_path, text))
    plan = make_plan(scenario, 0, tmp_path / "data")
    for name in ("va", "cleveland", "va_sybil"):
        assert plan.settings[name]["privacy.target_epsilon"] == 3.0
        assert plan.settings[name]["privacy.max_grad_norm"] == 0.5
    for name in ("hungarian", "switzerland"):
        assert not any(k.startswith("privacy.") for k in plan.settings[name])
    assert "privacy.nodes" not in plan.settings["va"]  # the scenario's own keys stay there


def test_secure_aggregation_goes_to_every_node_dp_only_to_the_named(tmp_path):
    text = FULL + ('\n[privacy]\ntarget_epsilon = 3.0\nsecure_aggregation = true\nnodes = ["va"]\n')
    plan = make_plan(load_scenario(write(tmp_path, text)), 0, tmp_path / "data")
    assert plan.settings["va"]["privacy.target_epsilon"] == 3.0
    assert plan.settings["va"]["privacy.seeded_noise"] is True
    for name in ("cleveland", "hungarian", "switzerland", "va"):
        assert plan.settings[name]["privacy.secure_aggregation"] is True
    assert "privacy.target_epsilon" not in plan.settings["cleveland"]
    assert "privacy.seeded_noise" not in plan.settings["cleveland"]


def test_the_run_without_dp_keeps_the_audit_and_drops_dp_and_the_maximum(tmp_path):
    text = FULL + (
        '\n[chain]\nbackend = "anvil"\nmax_epsilon = 8.0\n'
        "\n[privacy]\ntarget_epsilon = 8.0\nsecure_aggregation = true\ncompare_without_dp = true\n"
    )
    scenario = load_scenario(write(tmp_path, text))
    plain = without_dp(scenario)
    assert plain.privacy is not None and not plain.privacy.dp and plain.privacy.audit
    assert not plain.privacy.secure_aggregation and not plain.privacy.compare_without_dp
    assert plain.chain.max_epsilon is None and plain.chain.backend == "anvil"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('\n[privacy]\nnodes = ["nowhere"]\n', r"privacy.nodes.0: unknown node 'nowhere'"),
        ("\n[privacy]\ntarget_epsilon = -1\n", r"privacy.target_epsilon: Input should be greater"),
        ("\n[privacy]\nbogus = 1\n", r"privacy.bogus: unknown key"),
        (
            '\n[swarm]\nmerge = "median"\n[privacy]\nsecure_aggregation = true\n',
            r"needs swarm.merge = 'neighbourhood' or 'metropolis', not 'median'",
        ),
        (
            "\n[swarm]\ngossip_steps = 2\n[privacy]\nsecure_aggregation = true\n",
            r"privacy.secure_aggregation: needs swarm.gossip_steps = 1",
        ),
        (
            '\n[chain]\nbackend = "anvil"\n[privacy]\nsecure_aggregation = true\n',
            r"privacy.secure_aggregation: with a chain \(contribution scoring\) needs DP-SGD",
        ),
        (
            '\n[chain]\nbackend = "anvil"\n[privacy]\nsecure_aggregation = true\n'
            'target_epsilon = 8.0\nnodes = ["va"]\n',
            r"needs DP-SGD on every node",
        ),
        ("\n[chain]\nmax_epsilon = 3.0\n", r"chain.max_epsilon: needs a \[privacy\] section"),
        (
            '\n[chain]\nmax_epsilon = 3.0\n[privacy]\ntarget_epsilon = 3.0\nnodes = ["va"]\n',
            r"chain.max_epsilon: needs DP-SGD on every node",
        ),
    ],
)
def test_refused_privacy_settings_name_the_key(tmp_path, extra, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(write(tmp_path, FULL + extra))


def test_secure_aggregation_refuses_a_matchings_schedule(tmp_path):
    text = FULL.replace('kind = "full"', 'kind = "full"\nschedule = "matchings"')
    with pytest.raises(ScenarioError, match=r"needs topology.schedule = 'all'"):
        load_scenario(write(tmp_path, text + "\n[privacy]\nsecure_aggregation = true\n"))


def test_cross_site_evaluation_goes_to_every_node_and_is_refused_where_it_cannot_be(tmp_path):
    text = FULL + "\n[evaluation]\ncross_site = true\ndeadline_seconds = 20\n"
    plan = make_plan(load_scenario(write(tmp_path, text)), 0, tmp_path / "data")
    for name in ("cleveland", "hungarian", "switzerland", "va"):
        assert plan.settings[name]["evaluation.cross_site"] is True
        assert plan.settings[name]["evaluation.deadline_seconds"] == 20
    # Its models go in clear: under secure aggregation only when DP-SGD protects every one.
    secure = text + "\n[privacy]\nsecure_aggregation = true\n"
    with pytest.raises(ScenarioError, match=r"evaluation.cross_site: with privacy.secure_agg"):
        load_scenario(write(tmp_path, secure))
    load_scenario(write(tmp_path, secure + "target_epsilon = 8.0\n"))
    query = text + '\n[analytics.stats]\ncolumns = ["age"]\n'
    with pytest.raises(ScenarioError, match=r"evaluation.cross_site: it scores trained models"):
        load_scenario(write(tmp_path, query))
