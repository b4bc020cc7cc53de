from pathlib import Path

import pytest

from ledger.backends import CHAIN_BACKENDS
from node.errors import ConfigError, DataError
from node.merge import MERGE_RULES
from sim.run import make_plan
from sim.scenario import (
    CHAIN_BACKEND_NAMES,
    EXAMPLE_SCENARIO,
    KillFault,
    PartitionFault,
    PauseFault,
    ScenarioError,
    Sybil,
    load_scenario,
    write_example,
)

REPO = Path(__file__).resolve().parents[3]
SCENARIOS = sorted((REPO / "sim" / "scenarios").glob("*.toml"))
HEART = REPO / "data" / "heart-disease"
BREAST = REPO / "data" / "breast-cancer"
SITES = ["cleveland", "hungarian", "switzerland", "va"]

BASE = f"""\
name = "test"
rounds = 20

[data]
schema = "{HEART / "schema.toml"}"
validation_fraction = 0.25

[data.sites]
cleveland = "{HEART / "processed.cleveland.data"}"
hungarian = "{HEART / "processed.hungarian.data"}"
switzerland = "{HEART / "processed.switzerland.data"}"
va = "{HEART / "processed.va.data"}"

[topology]
kind = "ring"

[training]
lr = 0.05
"""
BREAST_DATA = f"""\
[data]
schema = "{BREAST / "schema.toml"}"
file = "{BREAST / "breast-cancer.csv"}"
"""
KILL = '\n[[faults]]\nkind = "kill"\nnode = "va"\nat = 5\n'
PARTITION = '\n[[faults]]\nkind = "partition"\ngroups = [{}]\nfrom = 5\nto = 8\n'
PAUSE = '\n[[faults]]\nkind = "pause"\nnode = "va"\nfrom = 5\nto = 8\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def test_every_shipped_scenario_loads():
    assert {p.name for p in SCENARIOS} >= {
        "heart-disease.toml",
        "breast-cancer.toml",
        "faults.toml",
        "attacks.toml",
    }
    for path in SCENARIOS:
        scenario = load_scenario(path)
        names = scenario.node_names()
        assert len(set(names)) == len(names) >= 2
        assert scenario.data.schema_file.is_absolute() and scenario.data.schema_file.is_file()
        scenario.topology.neighbours(len(names), scenario.seeds[0])


def test_shipped_scenarios_say_what_they_promise():
    heart = load_scenario(REPO / "sim/scenarios/heart-disease.toml")
    assert heart.node_names() == SITES
    assert (heart.topology.kind, heart.rounds, heart.seeds) == ("full", 20, [0])
    assert (heart.model.name, heart.model.hidden) == ("mlp", [32])
    assert (heart.training.optimizer, heart.training.lr, heart.training.epochs) == ("sgd", 0.05, 1)
    assert heart.chain.backend == "anvil"
    assert heart.baselines.local_only and heart.baselines.centralized and heart.baselines.fedavg
    assert heart.evaluation.cross_site

    breast = load_scenario(REPO / "sim/scenarios/breast-cancer.toml")
    assert breast.node_names() == [f"n{i:02d}" for i in range(20)]
    assert (breast.data.split, breast.data.alpha) == ("dirichlet", 0.3)
    assert (breast.topology.kind, breast.topology.degree, breast.chain.backend) == (
        "k_regular",
        4,
        "none",
    )

    faults = load_scenario(REPO / "sim/scenarios/faults.toml").faults
    assert {type(f) for f in faults} == {KillFault, PartitionFault}

    attacks = load_scenario(REPO / "sim/scenarios/attacks.toml")
    assert {a.kind for a in attacks.attacks} == {"label_flip", "free_rider", "sybil"}
    assert attacks.sybil_names() == ["hungarian_sybil"]
    assert attacks.chain.backend == "anvil"
    # The rule docs/consensus.md recommends from `medswarm bench robustness`, with f = 1.
    assert (attacks.swarm.merge, attacks.swarm.byzantine) == ("multi_krum", 1)


def test_the_example_is_the_heart_disease_scenario_and_round_trips(tmp_path, monkeypatch):
    shipped = load_scenario(REPO / "sim/scenarios/heart-disease.toml")
    monkeypatch.chdir(tmp_path)  # paths resolve against the file, not the working folder
    target = tmp_path / "elsewhere" / "scenario.toml"
    target.parent.mkdir()
    write_example(target)
    assert target.read_text().count("#") > 40  # commented
    example = load_scenario(target)
    assert example.model_dump() == shipped.model_dump()
    assert "../../data/heart-disease/schema.toml" in EXAMPLE_SCENARIO
    with pytest.raises(FileExistsError, match="already exists"):
        write_example(target)


def test_the_example_documents_the_optional_sections():
    for line in ["# [[faults]]", '# kind = "partition"', "# [[attacks]]", '# split = "dirichlet"']:
        assert line in EXAMPLE_SCENARIO


def test_chain_backends_are_the_ledgers_and_the_example_lists_them_and_the_merge_rules():
    assert ("none", *CHAIN_BACKENDS) == CHAIN_BACKEND_NAMES  # the scenario's Literal is static
    assert f"# {' | '.join(CHAIN_BACKEND_NAMES)}\n" in EXAMPLE_SCENARIO
    assert f"# {' | '.join(MERGE_RULES)}\n" in EXAMPLE_SCENARIO


def test_parsed_values_and_defaults(tmp_path):
    scenario = load_scenario(
        write(
            tmp_path,
            BASE
            + KILL
            + PARTITION.format('["va"], ["cleveland"]')
            + PAUSE.replace("va", "hungarian"),
        )
    )
    assert scenario.seeds == [0] and scenario.backend == "process"
    assert (
        scenario.data.sites is not None and scenario.data.sites["va"] == HEART / "processed.va.data"
    )
    kill, part, pause = scenario.faults
    assert isinstance(kill, KillFault) and (kill.node, kill.at, kill.restart) == ("va", 5, None)
    assert isinstance(part, PartitionFault) and (part.from_round, part.to_round) == (5, 8)
    assert isinstance(pause, PauseFault) and (pause.node, pause.to_round) == ("hungarian", 8)
    assert scenario.timeouts.fetch_seconds == 15  # a node's default
    assert scenario.chain.backend == "none"
    with pytest.raises(ValueError):
        scenario.rounds = 3  # frozen


def test_sybil_names():
    assert Sybil(kind="sybil", node="va").name == "va_sybil"


def test_relative_paths_are_relative_to_the_scenario_file(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.csv").write_text("x,y\n1,0\n")
    text = BASE.replace(str(HEART / "processed.va.data"), "sub/a.csv")
    monkeypatch.chdir("/")
    scenario = load_scenario(write(tmp_path, text))
    assert scenario.data.sites is not None
    assert scenario.data.sites["va"] == tmp_path / "sub" / "a.csv"


NATURAL_SCHEMA = """\
header = true
[target]
column = "y"
positive_above = 0
[[features]]
name = "x"
"""


def natural_scenario(tmp_path: Path, csv: str, column: str = "site") -> Path:
    (tmp_path / "schema.toml").write_text(NATURAL_SCHEMA)
    (tmp_path / "all.csv").write_text(csv)
    return write(
        tmp_path,
        'name = "nat"\n[data]\nschema = "schema.toml"\nfile = "all.csv"\n'
        f'split = "natural"\nsite_column = "{column}"\n',
    )


def test_natural_split_names_nodes_by_sorted_site_label(tmp_path):
    path = natural_scenario(tmp_path, "x,site,y\n1, b ,0\n\n2,a,1\n3,b,1\n4,c,0\n")
    scenario = load_scenario(path)
    assert scenario.node_names() == ["a", "b", "c"]
    assert scenario.site_labels().tolist() == ["b", "a", "b", "c"]


@pytest.mark.parametrize(
    ("csv", "column", "message"),
    [
        ("x,site,y\n1,a,0\n2,,1\n", "site", r"line 3: column 'site' is empty"),
        ("x,site,y\n1,a,0\n", "hospital", r"no column 'hospital'"),
        ("x,site,y\n1,a,0\n", "x", r"data.site_column: 'x' is a feature or the target"),
        ("x,site,y\n1,a,0\n2,a,1\n", "site", r"data: a swarm needs at least 2 nodes"),
        ("x,site,y\n1,a b,0\n2,a,1\n", "site", r"data: node name 'a b' is not a plain name"),
    ],
)
def test_bad_natural_splits(tmp_path, csv, column, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(natural_scenario(tmp_path, csv, column))


def replace(old: str, new: str):
    def edit(text: str) -> str:
        assert old in text
        return text.replace(old, new, 1)

    return edit


def prepend(extra: str, tail: str = ""):
    return lambda text: extra + text + tail


def append(extra: str):
    return lambda text: text + extra


def breast(extra: str):
    """Swap the heart-disease data for the breast-cancer file plus `extra` [data] keys."""
    start, end = BASE.index("[data]"), BASE.index("[topology]")
    return lambda text: text[:start] + BREAST_DATA + extra + "\n" + text[end:]


KNOWN = "known: cleveland, hungarian, switzerland, va"
RAY_ADDRESS_EXPECTED = (
    r"ray.address: Value error, expected \"auto\", \"ray://host:port\" or \"host:port\""
)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (prepend('colour = "red"\n'), r"colour: unknown key"),
        (replace('name = "test"\n', ""), r"name: required key is missing"),
        (replace('name = "test"', 'name = "a/b"'), r"name: String should match pattern"),
        (prepend("seeds = []\n"), r"seeds: List should have at least 1 item"),
        (prepend("seeds = [-1]\n"), r"seeds.0: Input should be greater than or equal to 0"),
        (
            prepend('backend = "vm"\n'),
            r"backend: Input should be 'process', 'inproc', 'docker' or 'ray'",
        ),
        (prepend('source = "x"\n'), r"source: unknown key"),
        (replace("rounds = 20", "rounds = 0"), r"rounds: Input should be greater than 0"),
        (replace("lr = 0.05", "lr = -1"), r"training.lr: Input should be greater than 0"),
        (replace("lr = 0.05", "seed = 3"), r"training.seed: each run's seed comes from `seeds`"),
        (append("[swarm]\nrounds = 5\n"), r"swarm.rounds: set the top-level `rounds`"),
        (append("[model]\ninit_seed = 1\n"), r"model.init_seed: each run's seed comes from"),
        (append('[model]\nname = "cnn"\n'), r"model.name: Input should be 'logreg' or 'mlp'"),
        (append('[swarm]\nmerge = "mean"\n'), r"swarm.merge: Input should be 'neighbourhood'"),
        (append('[chain]\nbackend = "geth"\n'), r"chain.backend: Input should be 'none'"),
        (append("[baselines]\ntarget_accuracy = 2\n"), r"baselines.target_accuracy: Input"),
        (replace("heart-disease/schema.toml", "nope.toml"), r"data.schema: .*file not found"),
        (replace("processed.va.data", "nope.data"), r"data.sites.va: .*file not found"),
        (replace("[data.sites]", "split = 'natural'\n[data.sites]"), r"data.split: only used"),
        (replace("[data.sites]", "nodes = 3\n[data.sites]"), r"data.nodes: not used with data"),
        (
            replace("[data.sites]", f'file = "{BREAST / "breast-cancer.csv"}"\n[data.sites]'),
            r"data: give exactly one of data.sites .* or data.synthetic .*got \[.sites., .file.\]",
        ),
        (breast(""), r"data.split: required with data.file \(natural \| dirichlet \| quantity\)"),
        (breast('split = "dirichlet"\nnodes = 4'), r"data.alpha: required with data.split = 'dir"),
        (
            breast('split = "quantity"\nnodes = 4\nalpha = 1\nsite_column = "s"'),
            r"data.site_column: not used with data.split = 'quantity'",
        ),
        (breast('split = "natural"\nsite_column = "s"\nmin_rows = 3'), r"data.min_rows: not used"),
        (
            breast('split = "natural"\nsite_column = "site"'),
            r"data.site_column: .*no column 'site'",
        ),
        (
            breast('split = "dirichlet"\nnodes = 100\nalpha = 1'),
            r"data: cannot split 569 rows into 100 nodes of at least 10 rows",
        ),
        (
            breast('split = "dirichlet"\nnodes = 4\nalpha = 0'),
            r"data.alpha: Input should be greater",
        ),
        (breast('split = "dirichlet"\nnodes = 4\nalpha = 1\nmin_rows = 0'), r"data.min_rows"),
        (replace('"ring"', '"k_regular"'), r"topology.degree: required with topology.kind = 'k_"),
        (replace('"ring"', '"ring"\ndegree = 2'), r"topology.degree: not used with topology.kind"),
        (replace('"ring"', '"k_regular"\ndegree = 4'), r"topology: degree must be in 1..3"),
        (
            replace('"ring"', '"edges"\nedges = [[0, 1], [1, 4]]'),
            r"topology.edges.1: \[1, 4\] names",
        ),
        (replace('"ring"', '"edges"\nedges = [[0, 1], [2, 3]]'), r"topology: .* not connected"),
        (replace('"ring"', '"edges"\nedges = [[0, 1, 2]]'), r"topology.edges.0: Tuple should have"),
        (replace('"ring"', '"star"'), r"topology.kind: Input should be 'ring'"),
        (append(KILL.replace('"va"', '"vaa"')), rf"faults.0.node: unknown node 'vaa' \({KNOWN}\)"),
        (append(KILL.replace("at = 5", "at = 0")), r"faults.0.at: Input should be greater than or"),
        (
            append(KILL.replace("at = 5", "at = 21")),
            r"faults.0.at: round 21 is after the last round",
        ),
        (append(KILL + "restart = 5\n"), r"faults.0.restart: 5 is not after at \(5\)"),
        (
            append(KILL + "restart = 25\n"),
            r"faults.0.restart: round 25 is after the last round \(20",
        ),
        (append(KILL + "bogus = 1\n"), r"faults.0.bogus: unknown key"),
        (append(KILL + KILL.replace("at = 5", "at = 9")), r"faults.1.at: 'va' is already down"),
        (append(KILL.replace('"kill"', '"explode"')), r"faults.0: Input tag 'explode'"),
        (
            append(PARTITION.format('["va"], ["va", "cleveland"]')),
            r"faults.0.groups.1: node 'va' is also in group 0",
        ),
        (append(PARTITION.format('["va"], ["x"]')), r"faults.0.groups.1: unknown node 'x'"),
        (append(PARTITION.format('["va"]')), r"faults.0.groups: List should have at least 2"),
        (append(PARTITION.format('["va"], []')), r"faults.0.groups.1: List should have at least 1"),
        (
            append(PARTITION.format('["va"], ["hungarian"]').replace("to = 8", "to = 3")),
            r"faults.0.to: 3 comes before from \(5\)",
        ),
        (
            append(PARTITION.format('["va"], ["hungarian"]').replace("to = 8", "to = 30")),
            r"faults.0.to: round 30 is after the last round",
        ),
        (append(PAUSE.replace('"va"', '"x"')), r"faults.0.node: unknown node 'x'"),
        (append(PAUSE.replace("to = 8", "to = 4")), r"faults.0.to: 4 comes before from \(5\)"),
        (append(PAUSE.replace("to = 8", "to = 21")), r"faults.0.to: round 21 is after the last"),
        (append(PAUSE.replace("from = 5", "from = 0")), r"faults.0.from: Input should be greater"),
        (append(PAUSE.replace("from = 5\n", "")), r"faults.0.from: required key is missing"),
        (append(PAUSE + "at = 5\n"), r"faults.0.at: unknown key"),
        (
            append(PAUSE + PAUSE.replace("from = 5", "from = 8").replace("to = 8", "to = 9")),
            r"faults.1.from: 'va' is already down or frozen then \(faults.0\)",
        ),
        (
            append(KILL + "restart = 7\n" + PAUSE),
            r"faults.1.from: 'va' is already down or frozen then \(faults.0\)",
        ),
        (
            append(PAUSE.replace('"va"', '"hungarian"') + PAUSE + KILL + "restart = 10\n"),
            r"faults.2.at: 'va' is already down or frozen then \(faults.1\)",
        ),
        (
            prepend('backend = "inproc"\n', PAUSE),
            r"faults.0.kind: 'pause' cannot run with backend = 'inproc': its nodes are tasks of "
            r"one event loop",
        ),
        (
            prepend('backend = "ray"\n', PAUSE),
            r"faults.0.kind: 'pause' cannot run with backend = 'ray': Ray cannot freeze an actor",
        ),
        (append('[ray]\naddress = "my-cluster"\n'), RAY_ADDRESS_EXPECTED),
        (append('[ray]\naddress = "ray://head"\n'), RAY_ADDRESS_EXPECTED),
        (append('[ray]\naddress = "10.0.0.1:70000"\n'), RAY_ADDRESS_EXPECTED),
        (append('[ray]\naddress = "http://10.0.0.1:6379"\n'), RAY_ADDRESS_EXPECTED),
        (append("[ray]\naddress = 6379\n"), r"ray.address: Input should be a valid string"),
        (append("[ray]\nnum_cpus = -0.5\n"), r"ray.num_cpus: Input should be greater than or"),
        (append("[ray]\ncpus = 1\n"), r"ray.cpus: unknown key"),
        (
            append("[timeouts]\nconnect_seconds = 5\nfetch_seconds = 5\n"),
            r"timeouts.fetch_seconds: 5 must exceed connect_seconds \(5\)",
        ),
        (append("[timeouts]\nfetch_seconds = 0\n"), r"timeouts.fetch_seconds: Input should be"),
        (
            append('[[faults]]\nkind = "slow"\nnode = "va"\ndelay_seconds = 0\n'),
            r"faults.0.delay_seconds: Input should be greater than 0",
        ),
        (append('[[attacks]]\nkind = "sign_flip"\nnode = "x"\n'), r"attacks.0.node: unknown node"),
        (
            append('[[attacks]]\nkind = "label_flip"\nnode = "va"\nfraction = 2\n'),
            r"attacks.0.fraction: Input should be less than or equal to 1",
        ),
        (
            append('[[attacks]]\nkind = "free_rider"\nnode = "va"\nmode = "lazy"\n'),
            r"attacks.0.mode: Input should be 'replay'",
        ),
        (
            append('[[attacks]]\nkind = "noise"\nnode = "va"\nfraction = 1\n'),
            r"attacks.0.fraction: unknown key",
        ),
        (
            append('[[attacks]]\nkind = "sybil"\nnode = "va"\n' * 2),
            r"attacks.1.node: the Sybil's name 'va_sybil' is taken",
        ),
    ],
)
def test_bad_scenarios_name_the_file_and_the_key(tmp_path, edit, message):
    path = write(tmp_path, edit(BASE))
    with pytest.raises(ScenarioError, match=message) as err:
        load_scenario(path)
    assert str(err.value).startswith(f"{path}: ")


def test_every_cross_reference_problem_is_reported_at_once(tmp_path):
    text = BASE + KILL.replace('"va"', '"a"') + '[[attacks]]\nkind = "noise"\nnode = "b"\n'
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, text))
    assert "faults.0.node: unknown node 'a'" in str(err.value)
    assert "attacks.0.node: unknown node 'b'" in str(err.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(ScenarioError, match="scenario file not found"):
        load_scenario(tmp_path / "nope.toml")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(write(tmp_path, "name = \n"))
    assert issubclass(ScenarioError, ConfigError)
    assert not issubclass(ScenarioError, DataError)


def test_a_pause_can_follow_a_kill_of_the_same_node(tmp_path):
    text = BASE + KILL + "restart = 7\n" + PAUSE.replace("from = 5", "from = 7")
    kill, pause = load_scenario(write(tmp_path, text)).faults
    assert isinstance(pause, PauseFault) and pause.from_round == kill.restart


def test_a_pause_is_refused_when_the_backend_becomes_inproc(tmp_path):
    from sim.run import with_backend

    scenario = load_scenario(write(tmp_path, BASE + PAUSE))
    assert with_backend(scenario, "docker").backend == "docker"
    with pytest.raises(ScenarioError, match=r"faults.0.kind: 'pause' cannot run with backend"):
        with_backend(scenario, "inproc")


def test_a_pause_is_refused_when_the_backend_becomes_ray(tmp_path):
    from sim.run import with_backend

    scenario = load_scenario(write(tmp_path, BASE + PAUSE))
    with pytest.raises(ScenarioError, match=r"faults.0.kind: 'pause' cannot run with backend"):
        with_backend(scenario, "ray")
    assert with_backend(load_scenario(write(tmp_path, BASE + KILL)), "ray").backend == "ray"


@pytest.mark.parametrize(
    "address", ["auto", "10.0.0.1:6379", "head.example.org:6379", "ray://head:10001", "[::1]:6379"]
)
def test_the_ray_section_takes_an_existing_clusters_address(tmp_path, address):
    text = 'backend = "ray"\n' + BASE + f'[ray]\naddress = "{address}"\nnum_cpus = 0\n'
    scenario = load_scenario(write(tmp_path, text))
    assert (scenario.backend, scenario.ray.address, scenario.ray.num_cpus) == ("ray", address, 0)


def test_by_default_ray_starts_an_instance_of_the_runs_own_with_half_a_cpu_a_node(tmp_path):
    scenario = load_scenario(write(tmp_path, 'backend = "ray"\n' + BASE))
    assert (scenario.ray.address, scenario.ray.num_cpus) == (None, 0.5)


ANALYTICS = '\n[analytics.stats]\ncolumns = ["age"]\n'


def test_an_analytics_scenario_takes_kills_only(tmp_path):
    scenario = load_scenario(write(tmp_path, BASE + ANALYTICS + KILL))
    assert scenario.analytics is not None and scenario.analytics.stats is not None
    with pytest.raises(ScenarioError, match=r"a pause needs training rounds"):
        load_scenario(write(tmp_path, BASE + ANALYTICS + PAUSE))
    restart = KILL + "restart = 7\n"
    with pytest.raises(ScenarioError, match=r"va restarts"):
        load_scenario(write(tmp_path, BASE + ANALYTICS + restart))
    attack = '\n[[attacks]]\nkind = "label_flip"\nnode = "va"\n'
    with pytest.raises(ScenarioError, match=r"attacks: they act on training"):
        load_scenario(write(tmp_path, BASE + ANALYTICS + attack))


def test_an_analytics_query_must_ask_something(tmp_path):
    with pytest.raises(ConfigError, match=r"nothing asked"):
        load_scenario(write(tmp_path, BASE + "\n[analytics]\nwhere = []\n"))


def swarm(merge: str, byzantine: int, topology: str = 'kind = "ring"') -> str:
    text = BASE.replace('kind = "ring"', topology)
    return text + f'\n[swarm]\nmerge = "{merge}"\nbyzantine = {byzantine}\n'


def test_a_robust_rule_is_checked_against_every_node_s_degree_before_the_start(tmp_path):
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, swarm("krum", 1)))
    assert (
        "swarm.byzantine: swarm.merge = 'krum' with swarm.byzantine = 1 needs n > 2f + 2 (n = "
        "neighbours + 1): at least 4 neighbours, but node 'cleveland' has 2 in the topology "
        "(3 more nodes too)"
    ) in str(err.value)
    full = 'kind = "full"'
    assert load_scenario(write(tmp_path, swarm("clipped_gossip", 1, full))).swarm.byzantine == 1
    with pytest.raises(ScenarioError, match=r"'bulyan' .* needs n >= 4f \+ 3 .* has 3 in the"):
        load_scenario(write(tmp_path, swarm("bulyan", 1, full)))
    with pytest.raises(ScenarioError, match=r"has 3 in the topology, 1 in its sparsest round of"):
        matchings = full + '\nschedule = "matchings"'
        load_scenario(write(tmp_path, swarm("clipped_gossip", 1, matchings)))
    with pytest.raises(ScenarioError, match="swarm.byzantine: .* tolerates no Byzantine neighbour"):
        load_scenario(write(tmp_path, swarm("metropolis", 1, full)))


def test_the_degree_check_counts_sybils_and_every_seed_s_graph(tmp_path):
    """Four sites and a Sybil: a 4-regular graph (five nodes needed) meets Krum's bound for
    f = 1; a 2-regular one does not, in either seed's graph."""
    sybil = '\n[[attacks]]\nkind = "sybil"\nnode = "va"\n'
    text = swarm("krum", 1, 'kind = "k_regular"\ndegree = 4') + sybil
    text = text.replace("rounds = 20", "rounds = 20\nseeds = [0, 1]")
    assert load_scenario(write(tmp_path, text)).sybil_names() == ["va_sybil"]
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, text.replace("degree = 4", "degree = 2")))
    assert "has 2 in the topology (4 more nodes too) (seed 0)" not in str(err.value)
    assert "has 2 in the topology (seed 0) (4 more nodes too)" in str(err.value)
    assert "(seed 1) (4 more nodes too)" in str(err.value)


ALIE_GROUP = """
[[attacks]]
kind = "alie"
node = "va"
group = "g"

[[attacks]]
kind = "alie"
node = "switzerland"
group = "g"
z = 1.5

[[attacks]]
kind = "ipm"
node = "hungarian"
epsilon = 2.0
"""


def test_alie_and_ipm_attackers_get_their_settings_and_a_group_one_folder(tmp_path):
    scenario = load_scenario(write(tmp_path, BASE.replace('"ring"', '"full"') + ALIE_GROUP))
    assert scenario.colluding_groups() == {"g": ["va", "switzerland"]}
    plan = make_plan(scenario, 0, tmp_path / "run" / "data")
    assert plan.honest == ["cleveland"]
    folder = str(tmp_path / "run" / "collusion" / "g")
    group = {"adversary.group_dir": folder, "adversary.group_size": 2, "adversary.alie_f": 2}
    assert plan.settings["va"].items() >= {"adversary.mode": "alie", **group}.items()
    assert "adversary.alie_z" not in plan.settings["va"]  # the paper's z_max
    assert plan.settings["switzerland"]["adversary.alie_z"] == 1.5
    assert (
        plan.settings["hungarian"].items()
        >= {"adversary.mode": "ipm", "adversary.ipm_epsilon": 2.0}.items()
    )
    assert plan.attacks == [
        "va: ALIE: publishes mean - z_max std of the models it received, colluding with "
        "switzerland",
        "switzerland: ALIE: publishes mean - z = 1.5 std of the models it received, colluding "
        "with va",
        "hungarian: IPM: publishes -2 times the mean update it received",
    ]


def test_a_colluding_group_cannot_run_in_containers(tmp_path):
    text = BASE.replace('"ring"', '"full"')
    text = text.replace("rounds = 20", 'rounds = 20\nbackend = "docker"')
    with pytest.raises(ScenarioError, match="a colluding group shares a folder of the run"):
        load_scenario(write(tmp_path, text + ALIE_GROUP))


def test_a_node_takes_one_attack(tmp_path):
    flip = '\n[[attacks]]\nkind = "label_flip"\nnode = "va"\n'
    sign = '\n[[attacks]]\nkind = "sign_flip"\nnode = "va"\n'
    with pytest.raises(
        ScenarioError, match=r"attacks.1.node: 'va' already misbehaves by attacks.0"
    ):
        load_scenario(write(tmp_path, BASE + flip + sign))
    sybil = '\n[[attacks]]\nkind = "sybil"\nnode = "va"\n'  # a copy beside it, not instead
    assert len(load_scenario(write(tmp_path, BASE + flip + sybil)).attacks) == 2
