import re
from pathlib import Path

import pytest

from gossip.identity import create_key_file
from node.config import load_config
from node.errors import ConfigError
from node.init import init_node

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "data" / "heart-disease"


@pytest.fixture
def config_path(tmp_path):
    path, _ = init_node(
        tmp_path,
        "cleveland",
        str(DATA / "processed.cleveland.data"),
        str(DATA / "schema.toml"),
        "/ip4/127.0.0.1/tcp/0",
        [],
    )
    return path


def test_node_init_writes_a_valid_commented_config_and_a_private_key(config_path):
    text = config_path.read_text()
    assert "# medswarm node configuration" in text
    assert (config_path.parent / "identity.key").stat().st_mode & 0o777 == 0o600
    cfg = load_config(config_path)
    assert cfg.node.name == "cleveland"
    assert cfg.node.key_file == config_path.parent / "identity.key"
    assert cfg.node.output_dir == config_path.parent / "out"
    assert cfg.swarm.merge == "neighbourhood"
    # The key itself never appears in the config.
    assert (config_path.parent / "identity.key").read_bytes().hex() not in text


def test_init_refuses_to_overwrite(config_path):
    with pytest.raises(FileExistsError):
        init_node(config_path.parent, "x", "d.csv", "s.toml", "/ip4/127.0.0.1/tcp/0", [])


def test_overrides_are_typed_and_validated(config_path):
    cfg = load_config(config_path, ["training.epochs=3", "model.hidden=[8, 4]", "node.name=zz"])
    assert cfg.training.epochs == 3
    assert cfg.model.hidden == [8, 4]
    assert cfg.node.name == "zz"
    with pytest.raises(ConfigError, match="training.epochs"):
        load_config(config_path, ["training.epochs=-1"])
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(config_path, ["training.epochs"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("[training]", "[training]\nepochz = 2"), r"training.epochz: unknown key"),
        (('name = "mlp"', 'name = "transformer"'), r"model.name: Input should be 'logreg' or"),
        (("epochs = 1 ", 'epochs = "one" '), r"training.epochs: .*integer"),
        (("processed.cleveland.data", "missing.data"), r"data.path: .*file not found"),
        (('listen = "/ip4/127.0.0.1/tcp/0"', 'listen = "/ip4/127.0.0.1/udp/1"'), r"node.listen"),
        (("enabled = false", "enabled = true"), r"ledger.contract is required when ledger"),
        (('contract = ""', 'contract = "0x12"'), r"ledger.contract: .*0x address of 40 hex"),
        (('# key_file = "eth.key"', 'key_file = "eth.key"'), r"ledger.key_file: .*not found"),
        (('metric = "auc"', 'metric = "f1"'), r"contribution.metric: Input should be"),
        (("neighbour_phases = []", "neighbour_phases = [0]"), r"1 phases for 0 neighbours"),
        (
            ("neighbour_phases = []", "neighbour_phases = [-1]"),
            r"node.neighbour_phases.0: .*greater than or equal to 0",
        ),
    ],
)
def test_bad_configs_name_the_file_and_key(config_path, edit, message):
    old, new = edit
    text = config_path.read_text()
    assert old in text
    config_path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message) as err:
        load_config(config_path)
    assert str(config_path) in str(err.value)


def test_a_rotation_needs_a_phase_below_it_for_every_neighbour(config_path):
    two = 'node.neighbours=["/ip4/127.0.0.1/tcp/1/p2p/a", "/ip4/127.0.0.1/tcp/2/p2p/b"]'
    cfg = load_config(config_path, [two, "node.neighbour_phases=[1, 0]", "swarm.rotation=2"])
    assert cfg.node.neighbour_phases == [1, 0]
    with pytest.raises(ConfigError, match=r"must be below swarm.rotation \(2\): \[2, 0\]"):
        load_config(config_path, [two, "node.neighbour_phases=[2, 0]", "swarm.rotation=2"])
    with pytest.raises(ConfigError, match="one phase per neighbour"):
        load_config(config_path, [two, "swarm.rotation=2"])


def test_secure_aggregation_takes_the_weighted_rules_and_one_mixing_step(config_path):
    two = 'node.neighbours=["/ip4/127.0.0.1/tcp/1/p2p/a", "/ip4/127.0.0.1/tcp/2/p2p/b"]'
    on = [two, "privacy.secure_aggregation=true"]
    for rule in ("neighbourhood", "metropolis"):
        assert load_config(config_path, [*on, f"swarm.merge={rule}"]).swarm.merge == rule
    with pytest.raises(ConfigError, match=r"swarm.merge = 'neighbourhood' or 'metropolis'"):
        load_config(config_path, [*on, "swarm.merge=median"])
    with pytest.raises(ConfigError, match=r"needs swarm.gossip_steps = 1: the extra mixing"):
        load_config(config_path, [*on, "swarm.gossip_steps=3"])
    assert load_config(config_path, [two, "swarm.gossip_steps=3"]).swarm.gossip_steps == 3
    with pytest.raises(ConfigError, match="swarm.gossip_steps"):
        load_config(config_path, ["swarm.gossip_steps=0"])


def test_cross_site_evaluation_is_off_by_default_and_needs_dp_under_secure_aggregation(
    config_path,
):
    cfg = load_config(config_path)
    assert not cfg.evaluation.cross_site and cfg.evaluation.deadline_seconds == 60
    assert "[evaluation]" in config_path.read_text()  # the template documents it
    two = 'node.neighbours=["/ip4/127.0.0.1/tcp/1/p2p/a", "/ip4/127.0.0.1/tcp/2/p2p/b"]'
    on = [two, "privacy.secure_aggregation=true", "evaluation.cross_site=true"]
    with pytest.raises(ConfigError, match=r"evaluation.cross_site needs DP-SGD"):
        load_config(config_path, on)
    assert load_config(config_path, [*on, "privacy.target_epsilon=8"]).evaluation.cross_site
    with pytest.raises(ConfigError, match=r"evaluation.deadline_seconds"):
        load_config(config_path, ["evaluation.deadline_seconds=0"])


def _neighbours(k):
    addrs = ", ".join(f'"/ip4/127.0.0.1/tcp/{i + 1}/p2p/p{i}"' for i in range(k))
    return f"node.neighbours=[{addrs}]"


@pytest.mark.parametrize(
    ("rule", "f", "fewest", "requirement"),
    [
        ("krum", 1, 4, "n > 2f + 2"),
        ("multi_krum", 2, 6, "n > 2f + 2"),
        ("bulyan", 1, 6, "n >= 4f + 3"),
        ("clipped_gossip", 2, 3, "more than f neighbours"),
        ("ubar", 1, 2, "more than f"),
        ("median", 2, 4, "n >= 2f + 1"),
    ],
)
def test_a_robust_rule_is_refused_where_the_degree_cannot_meet_its_bound(
    config_path, rule, f, fewest, requirement
):
    on = [f"swarm.merge={rule}", f"swarm.byzantine={f}"]
    assert load_config(config_path, [_neighbours(fewest), *on]).swarm.byzantine == f
    message = (
        rf"swarm.merge = '{rule}' with swarm.byzantine = {f} needs .*{re.escape(requirement)}.*"
        rf"at least {fewest} neighbours, but this node has {fewest - 1} in node.neighbours"
    )
    with pytest.raises(ConfigError, match=message):
        load_config(config_path, [_neighbours(fewest - 1), *on])


def test_byzantine_neighbours_need_a_robust_rule_and_enough_trimming(config_path):
    with pytest.raises(ConfigError, match="a weighted average tolerates no Byzantine neighbour"):
        load_config(config_path, [_neighbours(9), "swarm.byzantine=1"])
    trimmed = [_neighbours(4), "swarm.merge=trimmed_mean", "swarm.byzantine=1"]
    assert load_config(config_path, [*trimmed, "swarm.trim_fraction=0.2"])  # floor(0.2 * 5) = 1
    with pytest.raises(ConfigError, match=r"floor\(0.1 \* 5\) < 1; this node has 4"):
        load_config(config_path, [*trimmed, "swarm.trim_fraction=0.1"])
    krum = [_neighbours(4), "swarm.merge=multi_krum", "swarm.byzantine=1"]
    assert load_config(config_path, [*krum, "swarm.multi_krum_m=4"]).swarm.multi_krum_m == 4
    with pytest.raises(ConfigError, match=r"swarm.multi_krum_m = 5 exceeds n - f = 4"):
        load_config(config_path, [*krum, "swarm.multi_krum_m=5"])


def test_under_a_rotation_the_bound_holds_in_the_sparsest_round(config_path):
    rotation = ["swarm.rotation=2", "node.neighbour_phases=[0, 0, 0, 0, 1]"]
    robust = ["swarm.merge=clipped_gossip", "swarm.byzantine=1"]
    with pytest.raises(ConfigError, match="has 5 in node.neighbours, 1 in its sparsest round"):
        load_config(config_path, [_neighbours(5), *rotation, *robust])


def test_secure_aggregation_refuses_the_rules_that_need_each_model(config_path):
    on = [_neighbours(4), "privacy.secure_aggregation=true"]
    for rule in ("krum", "multi_krum", "bulyan", "clipped_gossip", "ubar"):
        with pytest.raises(ConfigError, match=f"'{rule}' needs every neighbour's model"):
            load_config(config_path, [*on, f"swarm.merge={rule}"])


def test_ubar_is_refused_with_dp_sgd_and_its_self_weight_is_a_share(config_path):
    ubar = [_neighbours(4), "swarm.merge=ubar", "swarm.byzantine=1"]
    assert load_config(config_path, [*ubar, "swarm.self_weight=0.25"]).swarm.self_weight == 0.25
    with pytest.raises(ConfigError, match=r"ubar picks neighbours by their loss on this node's"):
        load_config(config_path, [*ubar, "privacy.target_epsilon=8"])
    with pytest.raises(ConfigError, match=r"swarm.self_weight"):
        load_config(config_path, [*ubar, "swarm.self_weight=1"])


def test_missing_section_and_missing_file(tmp_path):
    create_key_file(tmp_path / "k")
    (tmp_path / "c.toml").write_text('[node]\nname = "a"\nkey_file = "k"\n')
    with pytest.raises(ConfigError, match="data: required key is missing"):
        load_config(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")
    (tmp_path / "bad.toml").write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_the_ledger_section_names_a_contract_and_a_key_file_never_a_key(config_path, tmp_path):
    text = config_path.read_text()
    assert "[ledger]" in text and "[contribution]" in text
    key = tmp_path / "eth.key"
    key.write_text("0x" + "11" * 32)
    contract = "0x" + "ab" * 20
    cfg = load_config(
        config_path,
        ["ledger.enabled=true", f'ledger.contract="{contract}"', f'ledger.key_file="{key}"'],
    )
    assert cfg.ledger.enabled and cfg.ledger.contract == contract
    assert cfg.ledger.key_file == key
    assert cfg.adversary.mode == "none"  # misbehaviour is opt-in, for simulations


def test_no_validation_split_needs_a_common_test_set(config_path):
    with pytest.raises(ConfigError) as err:
        load_config(config_path, ["data.validation_fraction=0"])
    assert "data.validation_fraction = 0 needs data.test_path" in str(err.value)
    test = f'data.test_path="{DATA / "processed.va.data"}"'
    cfg = load_config(config_path, ["data.validation_fraction=0", test])
    assert cfg.data.validation_fraction == 0 and cfg.data.test_path == DATA / "processed.va.data"
    with pytest.raises(ConfigError, match="data.validation_fraction: .*greater than or equal"):
        load_config(config_path, ["data.validation_fraction=-0.1", test])


def test_crafting_adversaries_need_the_models_and_a_group_is_alie(config_path, tmp_path):
    group = [f"adversary.group_dir={str(tmp_path / 'group')!r}", "adversary.group_size=2"]
    cfg = load_config(config_path, ["adversary.mode=alie", *group])
    assert cfg.adversary.group_dir == tmp_path / "group" and cfg.adversary.alie_z is None
    with pytest.raises(ConfigError, match="needs adversary.mode = 'alie', not 'ipm'"):
        load_config(config_path, ["adversary.mode=ipm", *group])
    with pytest.raises(ConfigError, match="group_size > 1 needs adversary.group_dir"):
        load_config(config_path, ["adversary.mode=alie", "adversary.group_size=2"])
    secure = [_neighbours(2), "privacy.secure_aggregation=true"]
    with pytest.raises(ConfigError, match="hides each neighbour's model, which adversary.mode"):
        load_config(config_path, [*secure, "adversary.mode=ipm"])
