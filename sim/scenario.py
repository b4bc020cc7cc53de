"""A simulation scenario: one TOML file, parsed once into a frozen pydantic model.

It names the data and how it is cut into nodes, the topology, the model and training settings
(the keys of a node config's [model], [training], [swarm] and [timeouts]), the chain, the faults and
attacks and the baselines. Relative paths are relative to the scenario file's folder. Unknown
keys, wrong types, missing files and references to nodes or rounds that do not exist are
rejected with the file, the key and what was expected.
"""

import csv
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from node.analytics.query import Query
from node.config import (
    BYZANTINE_RULES,
    MERGE_RULE_NAMES,
    SECURE_AGGREGATION_RULES,
    EvaluationSection,
    ModelSection,
    PrivacySection,
    SwarmSection,
    TimeoutSection,
    TrainingSection,
    byzantine_problem,
    format_validation_error,
    partners_per_round,
)
from node.dataset import DataSchema, load_schema, load_table, load_test_set, not_numbers
from node.errors import ConfigError, DataError
from sim import partition, synthetic, topology
from sim.errors import AlreadyExists, SimError
from sim.synthetic import SyntheticSpec

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # node and scenario names become folder names
# Keys of the node sections that the scenario sets itself.
RESERVED = {
    "model.init_seed": "each run's seed comes from `seeds`",
    "training.seed": "each run's seed comes from `seeds`",
    "swarm.rounds": "set the top-level `rounds`",
    "source": "unknown key",
}


class ScenarioError(ConfigError, SimError):
    """A scenario file is invalid: the message names the file, the key and what was expected."""


def _existing(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    path = value if value.is_absolute() or base is None else (base / value).resolve()
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


ExistingFile = Annotated[Path, AfterValidator(_existing)]
Round = Annotated[int, Field(ge=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Section):
    """Per-site files (`sites`), or one `file` (or `synthetic` records) and a `split` into
    nodes; optionally a common test set: a file in the schema's format (`test_file`), or a
    share held out of the one data set (`test_fraction`)."""

    schema_file: ExistingFile | None = Field(None, alias="schema")
    sites: dict[str, ExistingFile] | None = None
    file: ExistingFile | None = None
    synthetic: SyntheticSpec | None = None
    split: Literal["natural", "dirichlet", "quantity"] | None = None
    site_column: str | None = None
    nodes: int | None = Field(None, ge=2)
    alpha: float | None = Field(None, gt=0, allow_inf_nan=False)
    min_rows: int = Field(10, ge=1)
    # 0: no validation split (only with a common test set, which then serves instead).
    validation_fraction: float = Field(0.25, ge=0, lt=1)
    # One test set that every node, the consensus model and the baselines are scored on each
    # round: a file in the schema's format, or a stratified, seeded share of the rows held out
    # before the split.
    test_file: ExistingFile | None = None
    test_fraction: float | None = Field(None, gt=0, lt=1)
    # The nodes take the scaling from a reference the simulator computes from every node's
    # records (their pooled statistics), as a consortium may publish one, instead of agreeing
    # it at start by secure sums over all members (node config `data.scaling`): for swarms of
    # hundreds of nodes, where those sums' messages grow with the square of the members.
    reference_scaling: bool = False


class TopologySection(_Section):
    kind: Literal["ring", "k_regular", "random", "full", "edges"] = "ring"
    degree: int | None = Field(None, gt=0)
    edges: list[tuple[int, int]] | None = None
    # "matchings": each round every node gossips with at most one neighbour, in a rotation
    # that meets every neighbour once per cycle (a fraction of the messages per round).
    schedule: Literal["all", "matchings"] = "all"

    def neighbours(self, n: int, seed: int) -> list[set[int]]:
        """Neighbour sets of the n nodes (in `Scenario.node_names` order) for this seed."""
        return topology.neighbours(self.kind, n, degree=self.degree, seed=seed, edges=self.edges)


# "none" and ledger.backends.CHAIN_BACKENDS by name (static for pydantic and mypy, and no web3
# to read a scenario; a unit test keeps them equal).
ChainBackendName = Literal["none", "anvil", "ganache", "embedded"]
CHAIN_BACKEND_NAMES: tuple[str, ...] = get_args(ChainBackendName)


class ChainSection(_Section):
    backend: ChainBackendName = "none"
    rounds_per_epoch: int = Field(5, gt=0)
    reward_per_epoch_eth: float = Field(1.0, ge=0)
    pool_eth: float = Field(20.0, ge=0)
    # The consortium's maximum epsilon per member (on chain; the audit flags a member past it).
    max_epsilon: float | None = Field(None, gt=0, allow_inf_nan=False)


class PrivacyScenario(PrivacySection):
    """A node config's [privacy]: DP-SGD for `nodes` (default: all), secure aggregation for the
    whole swarm (a protocol every node must speak), and the privacy audit."""

    nodes: list[str] | None = None
    # A curious neighbour's membership-inference attack on the models it receives from each
    # hospital (sim/privacy_audit.py), in the report.
    audit: bool = True
    # Also run the same seed without DP-SGD, for the report's "DP off" columns.
    compare_without_dp: bool = False

    def node_settings(self, private: bool) -> dict[str, Any]:
        """The node config keys this section sets (those written in the scenario): all of
        them for a node with DP-SGD (`private`), the swarm-wide ones for the others."""
        written = sorted(self.model_fields_set - {"nodes", "audit", "compare_without_dp"})
        chosen = written if private else [k for k in written if k in SWARM_WIDE_PRIVACY]
        return {f"privacy.{k}": getattr(self, k) for k in chosen}


SWARM_WIDE_PRIVACY = {"secure_aggregation", "share_threshold"}


class BaselinesSection(_Section):
    """What the swarm is compared with: each trained only when asked (and then cached)."""

    local_only: bool = False
    centralized: bool = False
    fedavg: bool = False
    # The same FedAvg deployed as processes (a server and a client per site) over libp2p: the
    # wall-clock to compare with the swarm's on the process backend.
    fedavg_network: bool = False
    # With swarm.personalize: the same swarm again with every parameter shared, into
    # shared-swarm/, for the report's own-site and all-site table (docs/heterogeneity.md).
    shared_swarm: bool = False
    target_accuracy: float | None = Field(None, gt=0, le=1)
    # Keep the baselines' results per scenario, seed and data (sim/baseline_cache.py): a rerun
    # of the same comparison does not train them again.
    cache: bool = True

    @property
    def asked(self) -> bool:
        """Whether any baseline is to be trained."""
        return self.local_only or self.centralized or self.fedavg or self.fedavg_network


class _NodeEvent(_Section):
    node: str


class KillFault(_NodeEvent):
    """The node is killed at round `at` and restarted at round `restart` (None: never)."""

    kind: Literal["kill"]
    at: Round
    restart: Round | None = None


class PartitionFault(_Section):
    """The groups cannot reach each other during rounds [from, to]; nodes in no group keep
    their links."""

    kind: Literal["partition"]
    groups: list[Annotated[list[str], Field(min_length=1)]] = Field(min_length=2)
    from_round: Round = Field(alias="from")
    to_round: Round = Field(alias="to")


class PauseFault(_NodeEvent):
    """The node is frozen during rounds [from, to]: not killed, it keeps its memory and its
    connections, but nothing in it runs or answers (SIGSTOP, or `docker pause`)."""

    kind: Literal["pause"]
    from_round: Round = Field(alias="from")
    to_round: Round = Field(alias="to")


class SlowFault(_NodeEvent):
    """The node waits `delay_seconds` before publishing each round."""

    kind: Literal["slow"]
    delay_seconds: float = Field(gt=0, allow_inf_nan=False)


class LabelFlip(_NodeEvent):
    kind: Literal["label_flip"]
    fraction: float = Field(1.0, gt=0, le=1)  # share of its training labels flipped


class NoiseAttack(_NodeEvent):
    kind: Literal["noise"]
    std: float = Field(1.0, gt=0)  # gaussian noise added to the published update


class SignFlip(_NodeEvent):
    kind: Literal["sign_flip"]


class FreeRider(_NodeEvent):
    kind: Literal["free_rider"]
    mode: Literal["replay", "stale", "zeros", "noise"] = "replay"
    std: float = Field(1.0, gt=0)  # for mode = "noise"


class AlieAttack(_NodeEvent):
    """Publishes mean - z std of the neighbours' models it received last round (A Little Is
    Enough); nodes with the same `group` collude: all publish ALIE over the union of what the
    group received (coordinated through a folder of the run, the simulator's stand-in for a
    side channel)."""

    kind: Literal["alie"]
    z: float | None = Field(None, ge=0, allow_inf_nan=False)  # default: the paper's z_max
    group: str | None = Field(None, pattern=f"^{NAME.pattern}$")


class IpmAttack(_NodeEvent):
    """Publishes -epsilon times the mean update of the models it received last round
    (inner-product manipulation)."""

    kind: Literal["ipm"]
    epsilon: float = Field(0.5, gt=0, allow_inf_nan=False)


class Sybil(_NodeEvent):
    """A copy of `node` under a new identity, with the same data."""

    kind: Literal["sybil"]

    @property
    def name(self) -> str:
        return f"{self.node}_sybil"


Fault = Annotated[KillFault | PartitionFault | PauseFault | SlowFault, Field(discriminator="kind")]
Attack = Annotated[
    LabelFlip | NoiseAttack | SignFlip | FreeRider | Sybil | AlieAttack | IpmAttack,
    Field(discriminator="kind"),
]
KINDS = (
    "kill",
    "partition",
    "pause",
    "slow",
    "label_flip",
    "noise",
    "sign_flip",
    "free_rider",
    "sybil",
    "alie",
    "ipm",
)


Backend = Literal["process", "inproc", "docker", "ray"]
BACKENDS: tuple[str, ...] = get_args(Backend)
# An existing Ray cluster: "auto" (the one `ray start` runs on this machine), a Ray Client
# address ("ray://host:port") or the head's GCS address ("host:port").
RAY_ADDRESS = re.compile(r"(?:ray://)?(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})")


class RaySection(_Section):
    """The ray backend (sim/ray_backend.py): which cluster, and what each node's actor takes."""

    # None: a Ray instance of the run's own on this machine, shut down at the end.
    address: str | None = None
    # Ray CPUs each node's actor reserves: small, so that a few cores host a small swarm (the
    # nodes wait on the network most of a round); 0 places any number of nodes.
    num_cpus: float = Field(0.5, ge=0, allow_inf_nan=False)

    @field_validator("address")
    @classmethod
    def _known_address_form(cls, value: str | None) -> str | None:
        if value is None or value == "auto":
            return value
        match = RAY_ADDRESS.fullmatch(value)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ValueError('expected "auto", "ray://host:port" or "host:port"')
        return value


class Scenario(_Section):
    source: Path = Field(exclude=True)
    name: str = Field(pattern=f"^{NAME.pattern}$")
    seeds: list[Annotated[int, Field(ge=0)]] = Field([0], min_length=1)
    backend: Backend = "process"
    # inproc: the processes the nodes share (1: the simulator's own; more use more cores).
    workers: int = Field(1, ge=1)
    rounds: int = Field(20, gt=0)
    data: DataSection
    topology: TopologySection = TopologySection()
    model: ModelSection = ModelSection()
    training: TrainingSection = TrainingSection()
    swarm: SwarmSection = SwarmSection()
    timeouts: TimeoutSection = TimeoutSection()
    chain: ChainSection = ChainSection()
    privacy: PrivacyScenario | None = None
    ray: RaySection = RaySection()
    faults: list[Fault] = []
    attacks: list[Attack] = []
    baselines: BaselinesSection = BaselinesSection()
    # As a node config's [evaluation]: with cross_site, every node scores every node's final
    # model and their consensus on its validation split (summary.json "cross_site").
    evaluation: EvaluationSection = EvaluationSection()
    # A federated-analytics run: every node answers this query (statistics, models) with the
    # others instead of training; a kill's `at` counts the query's secure sums.
    analytics: Query | None = None

    def node_names(self) -> list[str]:
        """The data nodes in order (topology indices); Sybils come on top (`sybil_names`).

        `sites`: its keys; a natural split: the sorted site labels (reads the file);
        dirichlet or quantity: n00, n01, ...
        """
        data = self.data
        if data.sites is not None:
            return list(data.sites)
        if data.split == "natural":
            return list(partition.natural(self.site_labels()))
        nodes = data.nodes or 0
        width = max(2, len(str(nodes - 1)))
        return [f"n{i:0{width}d}" for i in range(nodes)]

    def sybil_names(self) -> list[str]:
        return [a.name for a in self.attacks if isinstance(a, Sybil)]

    def colluding_groups(self) -> dict[str, list[str]]:
        """Each colluding group's members (ALIE attacks that name a `group`), in attack order."""
        groups: dict[str, list[str]] = {}
        for a in self.attacks:
            if isinstance(a, AlieAttack) and a.group is not None:
                groups.setdefault(a.group, []).append(a.node)
        return groups

    def site_labels(self) -> np.ndarray:
        """Each data row's site (natural split), as the stripped text of `data.site_column`."""
        if self.data.file is None or self.data.site_column is None or not self.data.schema_file:
            raise ValueError("site labels need data.file, data.schema and data.site_column")
        schema = load_schema(self.data.schema_file)
        return read_column(self.data.file, schema, self.data.site_column)


def read_column(path: Path, schema: DataSchema, column: str) -> np.ndarray:
    """One column's cells (stripped text) in file order, one per data row as `load_table`
    reads them (before cleaning). Raises `DataError` for an absent column or an empty cell."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        if column not in names:
            raise DataError(f"{path}: no column {column!r}; its columns are {names}")
        raw = pq.read_table(path, columns=[column]).column(0).to_pylist()
        cells = [(i + 1, "" if v is None else str(v).strip()) for i, v in enumerate(raw)]
    else:
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                # Blank lines are skipped exactly as load_table skips them.
                rows = [(reader.line_num, r) for r in reader if r and (len(r) > 1 or r[0].strip())]
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
        names = list(schema.columns or []) if not schema.header else []
        if schema.header and rows:
            names = [c.strip() for c in rows.pop(0)[1]]
        if column not in names:
            raise DataError(f"{path}: no column {column!r}; its columns are {names}")
        j = names.index(column)
        cells = [(line, r[j].strip() if j < len(r) else "") for line, r in rows]
    tokens = {t.strip() for t in schema.missing_tokens}
    for line, cell in cells:
        if cell in tokens:
            raise DataError(f"{path}, line {line}: column {column!r} is empty")
    return np.array([cell for _, cell in cells], dtype=str)


EXAMPLE_SCENARIO = """\
# medswarm simulation scenario: four hospitals of the UCI Heart Disease data set.
# Run it with `medswarm sim run <this file>`. Relative paths are relative to this file's folder.

name = "heart-disease"            # shown in the report and summary.json
seeds = [0]                       # one run per seed; the seed drives the split into nodes, the
                                  # initial model, training and each node's validation split
backend = "process"               # process: one `medswarm node run` per node | inproc | docker
                                  # | ray (actors on a Ray cluster: see [ray] below)
# workers = 2                     # inproc: the processes the nodes share, this one included
                                  # (1: all in this one; one per core uses every core)
rounds = 20                       # gossip rounds

[data]
schema = "../../data/heart-disease/schema.toml"   # the consortium's data schema
validation_fraction = 0.25        # held out at each node for evaluation and scoring (0: none,
                                  # with a common test set, which then serves instead)
# test_file = "test.csv"          # a common test set in the schema's format (checked before
#                                 # any node starts): every node's model, the consensus model
#                                 # and each baseline are scored on it each round (summary.json
#                                 # "test", the report); or test_fraction below, not both
# Either per-site files (node name = file), as here, or one file and a split into nodes:
# file = "../../data/breast-cancer/breast-cancer.csv"
# split = "dirichlet"             # natural (a site column) | dirichlet (label skew) | quantity
# site_column = "site"            # natural: the column naming each row's site, not a feature
# nodes = 20                      # dirichlet, quantity: node count (named n00, n01, ...)
# alpha = 0.3                     # dirichlet, quantity: smaller = more skewed
# min_rows = 10                   # dirichlet, quantity: rows every node gets at least
# Or generated records (scikit-learn make_classification, seeded; no `schema` or `file`), then
# a dirichlet or quantity split as above:
# synthetic = {rows = 200000, features = 64, seed = 0}   # optional: informative (default
#                                 # features / 2), class_sep = 1.0, flip_y = 0.01 (label noise)
# test_fraction = 0.1             # with file or synthetic: a stratified, seeded share held out
#                                 # before the split as the common test set (as test_file)
# reference_scaling = false       # true: nodes scale by a reference computed from all records
#                                 # (their pooled statistics) instead of agreeing it at start
#                                 # by secure sums over all members (for hundreds of nodes)

[data.sites]
cleveland = "../../data/heart-disease/processed.cleveland.data"
hungarian = "../../data/heart-disease/processed.hungarian.data"
switzerland = "../../data/heart-disease/processed.switzerland.data"
va = "../../data/heart-disease/processed.va.data"

[topology]
kind = "full"                     # ring | k_regular | random | full | edges
# degree = 4                      # k_regular: every node's degree; random: the average degree
# edges = [[0, 1], [1, 2]]        # edges: undirected links by node index (nodes in order)
# schedule = "matchings"         # each round one neighbour per node, all in turn (default "all")

[model]                           # as in a node config; the seed comes from `seeds`
name = "mlp"                      # logreg | mlp
hidden = [32]

[training]                        # as in a node config; the seed comes from `seeds`
epochs = 1                        # local epochs per round
batch_size = 32
lr = 0.05
optimizer = "sgd"                 # sgd | adam
momentum = 0.0
weight_decay = 0.0
# prox_mu = 0.0                   # FedProx's proximal term (docs/heterogeneity.md)

[swarm]                           # as in a node config; the rounds are set above
merge = "neighbourhood"           # {merge_rules}
trim_fraction = 0.2               # for trimmed_mean
gossip_steps = 1                  # mixing steps per round
byzantine = 0                     # f, the Byzantine neighbours the robust rules resist
# multi_krum_m = 0                # multi_krum: models averaged (0: n - f)
# clip_radius = 0.0               # clipped_gossip: tau (0: adaptive)
# self_weight = 0.5               # ubar: the own model's share of the merge
# personalize = "bias"            # keep the output's bias (or "head": the output layer) at
#                                 # each hospital (docs/heterogeneity.md)

# [timeouts]                      # as in a node config
# connect_seconds = 5
# fetch_seconds = 15              # a neighbour that sends nothing by then is skipped that round

[chain]
backend = "anvil"                 # {chain_backends}
rounds_per_epoch = 5              # rewards are paid per epoch of this many rounds
reward_per_epoch_eth = 1.0
pool_eth = 20.0
# max_epsilon = 8.0               # the consortium's maximum epsilon per member (needs DP-SGD)

[evaluation]                      # as in a node config
cross_site = true                 # after the last round every node scores every node's final
                                  # model and their consensus on its validation split (the
                                  # report's cross-site tables; each row's sha256 on the chain)
# deadline_seconds = 60           # how long a node waits for the others' final models

# [ray]                           # backend = "ray" only
# address = "auto"                # an existing cluster: "auto" | "ray://host:port" | "host:port"
#                                 # (default: a Ray instance of the run's own on this machine)
# num_cpus = 0.5                  # Ray CPUs each node's actor reserves (0: no limit)

# [privacy]                       # docs/privacy.md: what each guarantee covers
# target_epsilon = 8.0            # DP-SGD: each hospital's budget for the run (delta 1/(10 n))
# nodes = ["cleveland", "va"]     # DP-SGD only for these (default: every node)
# secure_aggregation = true       # every node: neighbours see only sums of models
# audit = true                    # the membership-inference audit, in the report
# compare_without_dp = true       # and the same run without DP-SGD beside it

[baselines]                       # what the swarm is compared with: each trained only when
                                  # set here, and its results cached per scenario, seed and
                                  # data (cache = false to train it again)
local_only = true                 # each node alone on its own data
centralized = true                # one model on all the data pooled
fedavg = true                     # server-based federated averaging
fedavg_network = false            # also run it as a server and client processes (wall-clock)
# shared_swarm = true             # with swarm.personalize: the same swarm sharing everything
target_accuracy = 0.8             # report the rounds each method needs to reach this

# Faults, any number, each a [[faults]] table:
# [[faults]]
# kind = "kill"                   # kill `node` at round `at`, restart it at `restart`
# node = "va"                     # (omit restart: it stays down)
# at = 5
# restart = 8
# [[faults]]
# kind = "partition"              # the groups cannot reach each other in rounds [from, to];
# groups = [["cleveland", "hungarian"], ["switzerland", "va"]]   # others keep their links
# from = 5
# to = 10
# [[faults]]
# kind = "pause"                  # `node` is frozen in rounds [from, to] (SIGSTOP, docker
# node = "va"                     # pause; not on inproc or ray): it keeps memory and connections,
# from = 5                        # but answers nothing until it is thawed
# to = 7
# [[faults]]
# kind = "slow"                   # `node` waits before publishing each round
# node = "va"
# delay_seconds = 2.0

# Attacks, any number, each an [[attacks]] table naming the misbehaving node:
# [[attacks]]
# kind = "label_flip"             # label_flip: flips `fraction` of its training labels
# node = "va"                     # noise: adds gaussian noise of `std` to its published update
# fraction = 1.0                  # sign_flip: publishes its update negated
#                                 # free_rider: mode = "replay" | "stale" | "zeros" | "noise"
#                                 # sybil: a copy of `node` named "<node>_sybil", same data
#                                 # alie: mean - z std of the models it received last round
#                                 #   (`z`, default the paper's z_max); attackers with the same
#                                 #   `group = "g"` collude: all publish ALIE over the union of
#                                 #   what they received, through a folder of the run (the
#                                 #   simulator's stand-in for a side channel; not on docker)
#                                 # ipm: -`epsilon` (0.5) times the mean update it received
# Against them, a robust [swarm] merge with `byzantine = f`: every node's degree must meet the
# rule's bound (krum: more than 2f + 1 neighbours; docs/consensus.md), checked before the start.

# Federated analytics instead of training (docs/analytics.md; sim/scenarios/
# heart-disease-analytics.toml): every node answers one query with the others, by secure sums.
# [analytics.stats]
# columns = ["age", "chol"]       # default: the target and every numeric feature
# crosstabs = [["cp", "outcome"]] # each with a chi-square test
# [[analytics.glm]]
# formula = "outcome ~ age + sex + cp"
# family = "binomial"             # binomial | poisson | gaussian
""".replace("{merge_rules}", " | ".join(MERGE_RULE_NAMES))
EXAMPLE_SCENARIO = EXAMPLE_SCENARIO.replace("{chain_backends}", " | ".join(CHAIN_BACKEND_NAMES))


def write_example(path: Path) -> None:
    """Write `EXAMPLE_SCENARIO` to `path` (not over an existing file), with the data paths made
    relative to its folder."""
    path = Path(path)
    if path.exists():
        raise AlreadyExists(f"{path} already exists; not overwriting it")
    data = os.path.relpath(REPO_DATA, path.resolve().parent)
    path.write_text(EXAMPLE_SCENARIO.replace('"../../data/', f'"{Path(data).as_posix()}/'))


def load_scenario(path: Path) -> Scenario:
    """Parse and validate a scenario file, including its references to nodes and rounds."""
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"{path}: scenario file not found") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    problems = _reserved(raw)
    if not problems:
        try:
            scenario = Scenario.model_validate(
                {**raw, "source": path}, context={"base_dir": path.parent}
            )
        except ValidationError as exc:
            message = format_validation_error(path, exc, "scenario")
            # A fault's or attack's errors are located under its kind: drop it from the key.
            raise ScenarioError(_KIND_IN_KEY.sub(r"\1", message)) from None
        problems = _problems(scenario)
    if problems:
        raise ScenarioError("\n  ".join([f"{path}: invalid scenario", *problems]))
    return scenario


_KIND_IN_KEY = re.compile(rf"^(  (?:faults|attacks)\.\d+)\.(?:{'|'.join(KINDS)})\b", re.M)


def _reserved(raw: dict[str, Any]) -> list[str]:
    found = []
    for key, why in RESERVED.items():
        *section, leaf = key.split(".")
        table = raw.get(section[0]) if section else raw
        if isinstance(table, dict) and leaf in table:
            found.append(f"{key}: {why}")
    return found


def _problems(s: Scenario) -> list[str]:
    """What pydantic cannot see: which keys go together, node names, rounds, the topology."""
    problems = _data_problems(s)
    if problems:
        return problems
    try:
        names = s.node_names()
    except DataError as exc:
        return [f"data.site_column: {exc}"]
    bad = [n for n in names if not NAME.fullmatch(n)]
    problems = [f"data: node name {n!r} is not a plain name (letters, digits, _ . -)" for n in bad]
    if len(names) < 2:
        problems.append(f"data: a swarm needs at least 2 nodes, got {names}")
    return problems or [
        *backend_problems(s),
        *_timeout_problems(s),
        *_topology_problems(s, len(names) + len(s.sybil_names())),  # Sybils are nodes too
        *_fault_problems(s, names),
        *_attack_problems(s, names),
        *_merge_problems(s, [*names, *s.sybil_names()]),
        *_privacy_problems(s, names),
        *_heterogeneity_problems(s),
        *_analytics_problems(s),
    ]


def _analytics_problems(s: Scenario) -> list[str]:
    """What a query run cannot take: there is no training, so no rounds to pace by."""
    if s.analytics is None:
        return []
    problems = [
        f"faults: a {f.kind} needs training rounds; an analytics run takes kills only "
        "(`at`: after that many of the query's secure sums)"
        for f in s.faults
        if f.kind != "kill"
    ]
    problems += [f"faults: {f.node} restarts; in an analytics run a killed node stays down"
                 for f in s.faults if f.kind == "kill" and f.restart]  # fmt: skip
    if s.attacks:
        problems.append("attacks: they act on training; an analytics run has none")
    if s.privacy is not None:
        problems.append("privacy: DP-SGD and secure aggregation are training's; the query's "
                        "sums are secure sums already")  # fmt: skip
    if s.baselines.asked:
        problems.append("baselines: they compare training; an analytics run has none")
    if s.evaluation.cross_site:
        problems.append(
            "evaluation.cross_site: it scores trained models; an analytics run trains none"
        )
    return problems


def backend_problems(s: Scenario) -> list[str]:
    """The docker backend's chain runs in a container too: Anvil, or none. Inproc nodes are
    tasks of one event loop, which cannot freeze one of them; Ray has no way to freeze an
    actor."""
    problems = []
    if s.backend == "docker" and s.chain.backend not in ("none", "anvil"):
        problems.append(
            f"chain.backend: {s.chain.backend!r} cannot run with backend = 'docker' (none | anvil)"
        )
    if why := UNFREEZABLE.get(s.backend):
        problems += [
            f"faults.{i}.kind: 'pause' cannot run with backend = {s.backend!r}: {why} "
            "(process | docker)"
            for i, fault in enumerate(s.faults)
            if isinstance(fault, PauseFault)
        ]
    if s.backend == "docker" and s.colluding_groups():
        problems.append(
            "attacks: a colluding group shares a folder of the run, which backend = 'docker' "
            "does not mount into the containers (process | inproc | ray)"
        )
    if s.workers > 1 and s.backend != "inproc":
        problems.append(
            f"workers: {s.workers} processes shared by the nodes is for backend = 'inproc' "
            f"(a {s.backend} node has its own process)"
        )
    return problems


# The backends that cannot freeze one node, and why.
UNFREEZABLE = {
    "inproc": "its nodes are tasks of one event loop, which cannot freeze one of them",
    "ray": "Ray cannot freeze an actor, only kill it",
}


# The optional keys of [data] each layout allows; all but min_rows are required.
DATA_KEYS = {
    "sites": set(),
    "natural": {"site_column"},
    "dirichlet": {"nodes", "alpha", "min_rows"},
    "quantity": {"nodes", "alpha", "min_rows"},
}


def _data_problems(s: Scenario) -> list[str]:
    data = s.data
    given = [k for k in ("sites", "file", "synthetic") if getattr(data, k) is not None]
    if len(given) != 1:
        return [
            "data: give exactly one of data.sites (per-site files), data.file (with a split) "
            f"or data.synthetic (generated records, with a split); got {given or 'none'}"
        ]
    if data.synthetic is not None and data.schema_file is not None:
        return ["data.schema: not used with data.synthetic (its schema is generated)"]
    if problems := _test_set_problems(data):
        return problems
    if data.synthetic is None and data.schema_file is None:
        return [f"data.schema: required with data.{given[0]}"]
    if data.sites is not None:
        where, layout = "data.sites", "sites"
        if data.split is not None:
            return ["data.split: only used with data.file or data.synthetic"]
        if data.test_fraction is not None:
            return [
                "data.test_fraction: needs one data set to hold the test set out of "
                "(data.file or data.synthetic), not per-site files; name a file of its own "
                "with data.test_file"
            ]
    elif data.split is None:
        kinds = "dirichlet | quantity" if data.synthetic else "natural | dirichlet | quantity"
        return [f"data.split: required with data.{given[0]} ({kinds})"]
    elif data.synthetic is not None and data.split == "natural":
        return ["data.split: 'natural' needs a site column; synthetic records have none "
                "(dirichlet | quantity)"]  # fmt: skip
    else:
        where, layout = f"data.split = {data.split!r}", data.split
    problems = []
    for key in ("site_column", "nodes", "alpha", "min_rows"):
        given_key = key in data.model_fields_set
        if key in DATA_KEYS[layout] - {"min_rows"} and not given_key:
            problems.append(f"data.{key}: required with {where}")
        elif key not in DATA_KEYS[layout] and given_key:
            problems.append(f"data.{key}: not used with {where}")
    if problems:
        return problems
    if data.synthetic is not None:
        y = synthetic.generate(data.synthetic)[1]
    else:
        assert data.schema_file is not None
        try:
            schema = load_schema(data.schema_file)
        except DataError as exc:
            return [f"data.schema: {exc}"]
        if data.test_file is not None:  # before any node starts: it would stop every one
            try:
                load_test_set(data.test_file, schema)
            except DataError as exc:
                return [f"data.test_file: {exc}"]
        if data.split == "natural" and data.site_column in {
            schema.target.column,
            *(f.name for f in schema.features),
        }:
            return [
                f"data.site_column: {data.site_column!r} is a feature or the target of the schema"
            ]
        if data.file is None:
            return []
        if data.test_fraction is None and (data.nodes is None or data.alpha is None):
            return []  # a natural split needs nothing more of the file here
        try:
            table = load_table(data.file, schema)
        except DataError as exc:
            return [f"data.file: {exc}"]
        # Its held-out rows are the nodes' common test set, which they refuse if it does not fit.
        if data.test_fraction is not None and (problem := not_numbers(table)):
            return [f"data.test_fraction: the test set is held out of {data.file}: {problem}"]
        if data.nodes is None or data.alpha is None:
            return []
        y = table.target
    assert data.nodes is not None and data.alpha is not None
    if data.test_fraction is not None:
        try:
            y = y[partition.hold_out(y, data.test_fraction, 0)[0]]
        except ValueError as exc:
            return [f"data.test_fraction: {exc}"]
    try:
        if data.split == "dirichlet":
            partition.dirichlet_label_skew(y, data.nodes, data.alpha, 0, data.min_rows)
        else:
            partition.quantity_skew(len(y), data.nodes, data.alpha, 0, data.min_rows)
    except ValueError as exc:
        return [f"data: {exc}"]
    return []


def _test_set_problems(data: DataSection) -> list[str]:
    """Which common test set, if any, and whether a validation split may be left out."""
    if data.test_file is not None and data.test_fraction is not None:
        return [
            "data.test_file: give data.test_file (a file) or data.test_fraction (a share held "
            "out of data.file or data.synthetic), not both"
        ]
    if data.test_file is not None and data.synthetic is not None:
        return [
            "data.test_file: not used with data.synthetic (its schema is generated; hold a "
            "test set out with data.test_fraction)"
        ]
    if data.test_file is not None:
        trained = {f"data.sites.{n}": f for n, f in (data.sites or {}).items()}
        trained |= {"data.file": data.file} if data.file else {}
        same = [k for k, f in trained.items() if f.resolve() == data.test_file.resolve()]
        if same:
            return [f"data.test_file: {data.test_file} is also {same[0]}: nodes would train on it"]
    if data.validation_fraction == 0 and data.test_file is None and data.test_fraction is None:
        return [
            "data.validation_fraction: 0 needs a common test set (data.test_file or "
            "data.test_fraction): without a validation split the nodes and baselines evaluate, "
            "and the nodes score their neighbours, on it"
        ]
    return []


def _timeout_problems(s: Scenario) -> list[str]:
    """What a node config would refuse: a fetch must leave room for connecting."""
    fetch, connect = s.timeouts.fetch_seconds, s.timeouts.connect_seconds
    if fetch <= connect:
        return [f"timeouts.fetch_seconds: {fetch:g} must exceed connect_seconds ({connect:g})"]
    return []


def _topology_problems(s: Scenario, n: int) -> list[str]:
    kind = s.topology.kind
    problems = []
    for key, used in (("degree", kind in ("k_regular", "random")), ("edges", kind == "edges")):
        given = getattr(s.topology, key) is not None
        if used != given:
            state = "required" if used else "not used"
            problems.append(f"topology.{key}: {state} with topology.kind = {kind!r}")
    if problems:
        return problems
    for seed in s.seeds if kind in ("k_regular", "random") else s.seeds[:1]:
        try:
            s.topology.neighbours(n, seed)
        except ValueError as exc:
            text = str(exc)
            return [f"topology.{text}" if text.startswith("edges.") else f"topology: {text}"]
    return []


def _fault_problems(s: Scenario, names: list[str]) -> list[str]:
    problems: list[str] = []
    # node -> the rounds [start, end) it is killed or frozen in, and the fault's index
    down: dict[str, list[tuple[int, float, int]]] = {}

    def late(key: str, value: int) -> list[str]:
        return (
            [f"{key}: round {value} is after the last round ({s.rounds})"]
            if value > s.rounds
            else []
        )

    for i, fault in enumerate(s.faults):
        key = f"faults.{i}"
        if isinstance(fault, PartitionFault):
            group_of: dict[str, int] = {}
            for g, group in enumerate(fault.groups):
                for name in group:
                    if name in group_of:
                        problems.append(
                            f"{key}.groups.{g}: node {name!r} is also in group {group_of[name]}"
                        )
                    group_of[name] = g
                    problems += _unknown(f"{key}.groups.{g}", name, names)
            start, end = fault.from_round, fault.to_round
            problems += late(f"{key}.from", start) + late(f"{key}.to", end)
            if end < start:
                problems.append(f"{key}.to: {end} comes before from ({start})")
            continue
        problems += _unknown(f"{key}.node", fault.node, names)
        if isinstance(fault, KillFault):
            first, since = "at", fault.at
            problems += late(f"{key}.at", fault.at)
            until = float("inf") if fault.restart is None else fault.restart
            if until <= fault.at:
                problems.append(f"{key}.restart: {fault.restart} is not after at ({fault.at})")
            elif fault.restart is not None:
                problems += late(f"{key}.restart", fault.restart)
        elif isinstance(fault, PauseFault):
            first, since, until = "from", fault.from_round, fault.to_round + 1
            problems += late(f"{key}.from", since) + late(f"{key}.to", fault.to_round)
            if fault.to_round < since:
                problems.append(f"{key}.to: {fault.to_round} comes before from ({since})")
        else:
            continue
        for other_since, other_until, j in down.get(fault.node, []):
            if since < other_until and other_since < until:
                problems.append(
                    f"{key}.{first}: {fault.node!r} is already down or frozen then (faults.{j})"
                )
        down.setdefault(fault.node, []).append((since, until, i))
    return problems


def _attack_problems(s: Scenario, names: list[str]) -> list[str]:
    problems: list[str] = []
    taken = set(names)
    attacked: dict[str, int] = {}  # node -> the attack that makes it misbehave
    for i, attack in enumerate(s.attacks):
        problems += _unknown(f"attacks.{i}.node", attack.node, names)
        if not isinstance(attack, Sybil):  # a Sybil copies the node; the others replace it
            if attack.node in attacked:
                problems.append(
                    f"attacks.{i}.node: {attack.node!r} already misbehaves by attacks."
                    f"{attacked[attack.node]}; one attack per node"
                )
            attacked.setdefault(attack.node, i)
        if isinstance(attack, Sybil):
            if attack.name in taken:
                problems.append(f"attacks.{i}.node: the Sybil's name {attack.name!r} is taken")
            taken.add(attack.name)
    return problems


def _merge_problems(s: Scenario, names: list[str]) -> list[str]:
    """What each node's config would refuse: its degree in the topology (per seed, where the
    graph is drawn per seed; its sparsest round under matchings) against the merge rule's bound
    for swarm.byzantine. One line per seed: the first such node and how many more."""
    if s.swarm.byzantine == 0:
        return []
    if s.swarm.merge not in BYZANTINE_RULES:  # whatever the degree
        return [f"swarm.byzantine: {byzantine_problem(s.swarm, 0, '')}"]
    seeds = s.seeds if s.topology.kind in ("k_regular", "random") else s.seeds[:1]
    problems = []
    for seed in seeds:
        try:
            nbrs = s.topology.neighbours(len(names), seed)
        except ValueError:
            return []  # the topology's own problem is reported
        per_round = [len(js) for js in nbrs]
        if s.topology.schedule == "matchings":
            phases = topology.matchings(nbrs, seed)
            rotation = max(phases.values(), default=0) + 1
            per_round = [
                partners_per_round(len(js), [phases[frozenset((i, j))] for j in js], rotation)
                for i, js in enumerate(nbrs)
            ]
        failing = [
            (name, len(js), partners)
            for name, js, partners in zip(names, nbrs, per_round, strict=True)
            if byzantine_problem(s.swarm, partners, "") is not None
        ]
        if not failing:
            continue
        name, degree, partners = failing[0]
        has = f"node {name!r} has {degree} in the topology" + (
            f", {partners} in its sparsest round of matchings" if partners != degree else ""
        )
        more = f" ({len(failing) - 1} more nodes too)" if len(failing) > 1 else ""
        where = f" (seed {seed})" if len(seeds) > 1 else ""
        problem = byzantine_problem(s.swarm, partners, has)
        problems.append(f"swarm.byzantine: {problem}{where}{more}")
    return problems


def private_nodes(s: Scenario, names: list[str]) -> list[str]:
    """The nodes the scenario's [privacy] applies to (Sybils copy their original's)."""
    if s.privacy is None:
        return []
    chosen = names if s.privacy.nodes is None else s.privacy.nodes
    twins = [a.name for a in s.attacks if isinstance(a, Sybil) and a.node in chosen]
    return [*chosen, *twins]


def _privacy_problems(s: Scenario, names: list[str]) -> list[str]:
    """What the nodes' configs would refuse, said in the scenario's keys."""
    p = s.privacy
    if p is None:
        return (
            ["chain.max_epsilon: needs a [privacy] section with DP-SGD on every node"]
            if s.chain.max_epsilon is not None
            else []
        )
    problems = [
        u for i, n in enumerate(p.nodes or []) for u in _unknown(f"privacy.nodes.{i}", n, names)
    ]
    every = p.nodes is None or set(p.nodes) >= set(names)
    if s.chain.max_epsilon is not None and not (p.dp and every):
        problems.append("chain.max_epsilon: needs DP-SGD on every node (privacy.nodes: all)")
    if not p.secure_aggregation:
        return problems
    if s.swarm.merge not in SECURE_AGGREGATION_RULES:
        rules = " or ".join(repr(r) for r in SECURE_AGGREGATION_RULES)
        problems.append(
            f"privacy.secure_aggregation: needs swarm.merge = {rules}, not {s.swarm.merge!r}"
        )
    if s.swarm.gossip_steps > 1:
        problems.append(
            "privacy.secure_aggregation: needs swarm.gossip_steps = 1 (the extra mixing steps "
            "exchange merged models in clear)"
        )
    if s.topology.schedule == "matchings":
        problems.append(
            "privacy.secure_aggregation: needs topology.schedule = 'all' (one neighbour a "
            "round: a sum of one model is that model)"
        )
    if s.evaluation.cross_site and not (p.dp and every):
        problems.append(
            "evaluation.cross_site: with privacy.secure_aggregation needs DP-SGD on every node: "
            "it floods every node's final model in clear"
        )
    if s.chain.backend != "none" and not (p.dp and every):
        problems.append(
            "privacy.secure_aggregation: with a chain (contribution scoring) needs DP-SGD on "
            "every node (privacy.target_epsilon or privacy.noise_multiplier, privacy.nodes: "
            "all): the scorer sees DP-protected snapshots"
        )
    return problems


def _heterogeneity_problems(s: Scenario) -> list[str]:
    """What FedProx and personalization cannot run with, said in the scenario's keys."""
    problems = []
    mode = s.swarm.personalize
    if s.baselines.shared_swarm and mode == "none":
        problems.append(
            "baselines.shared_swarm: compares a personalized swarm with the same swarm sharing "
            "every parameter: needs swarm.personalize = 'bias' or 'head'"
        )
    if s.training.prox_mu > 0 and s.privacy is not None and s.privacy.dp:
        problems.append(
            "training.prox_mu: DP-SGD (privacy.target_epsilon or privacy.noise_multiplier) "
            "clips each record's gradient, and the proximal term belongs to no record: needs 0"
        )
    if mode == "none":
        return problems
    if mode == "head" and s.model.name == "logreg":
        problems.append(
            "swarm.personalize = 'head': logreg's output layer is the whole model; use 'bias'"
        )
    if s.evaluation.cross_site:
        problems.append(
            f"evaluation.cross_site: floods each node's final model, whose local part "
            f"swarm.personalize = {mode!r} keeps at the hospital; set it false (the report's "
            "heterogeneity table scores every site's model at every site)"
        )
    if s.privacy is not None and s.privacy.audit:
        problems.append(
            f"privacy.audit: attacks the published models, which under swarm.personalize = "
            f"{mode!r} lack the local part; set privacy.audit = false"
        )
    crafted = sorted({a.kind for a in s.attacks if isinstance(a, AlieAttack | IpmAttack)})
    if crafted:
        problems.append(f"attacks: {', '.join(crafted)} are simulated without swarm.personalize")
    return problems


def _unknown(key: str, name: str, names: list[str]) -> list[str]:
    if name in names:
        return []
    return [f"{key}: unknown node {name!r} (known: {', '.join(names)})"]
