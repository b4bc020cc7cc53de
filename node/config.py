"""One node's configuration: a TOML file plus `--set key=value` overrides, parsed once.

Relative paths are relative to the config file's folder. Unknown keys, wrong types and missing
files are rejected with the file, the key and what was expected. Keys never live here: the config
names the key file, which holds the secret with mode 0600.
"""

import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from node.analytics.query import Query
from node.errors import ConfigError

# Not at run time: reading a config (e.g. `medswarm node health`, a container's health check
# every 30 s) must not pay for importing torch.
if TYPE_CHECKING:
    from node.training import TrainSettings

PositiveFloat = Annotated[float, Field(gt=0)]
# node.merge.MERGE_RULES by name (static for pydantic and mypy, and no numpy to read a config; a
# unit test keeps the two equal).
MergeRuleName = Literal[
    "neighbourhood",
    "metropolis",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "bulyan",
    "clipped_gossip",
    "ubar",
]
MERGE_RULE_NAMES: tuple[str, ...] = get_args(MergeRuleName)
# node.personalize.local_names's modes (static here for the same reasons; the same test).
PersonalizeMode = Literal["none", "bias", "head"]
PERSONALIZE_MODES: tuple[str, ...] = get_args(PersonalizeMode)
# node.merge.PAIR_WEIGHTS by name: the rules secure aggregation can run (a weighted sum whose
# weights both ends of a link compute alike; the same unit test keeps them equal).
SECURE_AGGREGATION_RULES: tuple[str, ...] = ("neighbourhood", "metropolis")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return value if value.is_absolute() or base is None else (base / value).resolve()


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    path = _resolve(value, info)
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


def _existing_optional_file(value: Path | None, info: ValidationInfo) -> Path | None:
    return None if value is None else _existing_file(value, info)


class NodeSection(_Section):
    name: str = Field(min_length=1, description="A readable name for logs and reports.")
    key_file: Path = Field(description="libp2p identity (Ed25519 seed, mode 0600).")
    x25519_key_file: Path | None = Field(
        None,
        description="X25519 masking key (mode 0600), registered on chain next to the peer ID: "
        "the secure sums and secure aggregation derive their masks from it.",
    )
    peer_keys: Path | None = Field(
        None,
        description="Without the ledger: the members' X25519 public keys, a JSON file of peer "
        "ID -> hex (with it, the keys members registered on chain).",
    )
    listen: str = "/ip4/127.0.0.1/tcp/0"
    neighbours: list[str] = Field(default_factory=list, description="Full /p2p/ multiaddrs.")
    neighbour_phases: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list,
        description="With swarm.rotation > 1: per neighbour, in the order above, the round "
        "phase (round % rotation) in which this node gossips with it.",
    )
    output_dir: Path = Path("out")
    keep_models: bool = Field(False, description="Keep each round's published model file.")
    evaluate_local: bool = Field(
        True,
        description="Also evaluate the freshly trained model before the merge (the progress "
        "line shows it); off, metrics records hold null for it.",
    )
    fsync: bool = Field(
        True,
        description="Flush each round's checkpoint to disk, so that a power loss loses "
        "nothing; without it only a killed process is safe.",
    )

    _paths = field_validator("key_file", "output_dir", "x25519_key_file")(_resolve)
    _existing = field_validator("peer_keys")(_existing_optional_file)

    @field_validator("listen")
    @classmethod
    def _listen_is_tcp(cls, value: str) -> str:
        if "/tcp/" not in value:
            raise ValueError(f"expected a TCP multiaddr such as /ip4/127.0.0.1/tcp/4001: {value}")
        return value


class DataSection(_Section):
    path: Path = Field(description="CSV or Parquet records of this hospital.")
    schema_file: Path = Field(alias="schema", description="The consortium's shared schema TOML.")
    validation_fraction: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="Share of the records held out for evaluation and contribution scoring; 0 "
        "(only with test_path): every record trains, and both are done on the test set.",
    )
    split_seed: int = 0
    test_path: Path | None = Field(
        None,
        description="A test set shared by the consortium (CSV or Parquet, the same schema): "
        "the merged model is scored on it every round, with the same scaling as this node's "
        "own records (metrics records: test).",
    )

    scaling: Path | None = Field(
        None,
        description="The consortium's reference scaling, a JSON file of 'mean' and 'std' per "
        "model input column: used instead of agreeing the pooled scaling at start (two exact "
        "secure sums over every member, whose messages grow with the square of the swarm).",
    )

    _paths = field_validator("path", "schema_file")(_existing_file)
    _test = field_validator("test_path", "scaling")(_existing_optional_file)

    @model_validator(mode="after")
    def _something_to_evaluate_on(self) -> Self:
        if self.validation_fraction == 0 and self.test_path is None:
            raise ValueError(
                "data.validation_fraction = 0 needs data.test_path: without a validation "
                "split the node evaluates its model and scores its neighbours on that test set"
            )
        return self


class ModelSection(_Section):
    name: Literal["logreg", "mlp"] = "mlp"
    hidden: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [32])
    init_seed: int = Field(0, description="The same everywhere so every node starts alike.")


class TrainingSection(_Section):
    epochs: int = Field(1, ge=0, description="Local epochs per round; 0 = averaging only.")
    batch_size: int = Field(32, gt=0)
    lr: PositiveFloat = 0.05
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    prox_mu: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="FedProx: mu / 2 * ||w - w_start||^2 added to the local loss, w_start the "
        "model the round began from (the last merge); 0: plain local training "
        "(docs/heterogeneity.md).",
    )
    seed: int = 0
    threads: int = Field(1, gt=0, description="torch threads for this node.")

    def settings(self) -> "TrainSettings":
        from node.training import TrainSettings

        return TrainSettings(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            optimizer=self.optimizer,
            prox_mu=self.prox_mu,
        )


class SwarmSection(_Section):
    rounds: int = Field(20, gt=0)
    merge: MergeRuleName = "neighbourhood"
    trim_fraction: float = Field(0.2, ge=0, lt=0.5)
    byzantine: int = Field(
        0,
        ge=0,
        description="f: the neighbours assumed Byzantine (they may send anything). The robust "
        "rules need enough neighbours for it (docs/consensus.md); the weighted rules tolerate "
        "none.",
    )
    multi_krum_m: int = Field(
        0, ge=0, description="multi_krum: the best-scored models averaged; 0: n - f."
    )
    clip_radius: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="clipped_gossip: the clipping radius tau (L2, whole model); 0: adaptive, "
        "the (f+1)-th largest distance to a neighbour that arrived this round.",
    )
    self_weight: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="ubar: alpha, the own model's share of the merge; the neighbours it picks "
        "share the rest equally.",
    )
    max_staleness: int = Field(2, ge=0, description="Oldest neighbour round accepted: r - this.")
    rotation: int = Field(
        1,
        ge=1,
        description="Gossip with each neighbour once every this many rounds (a matching "
        "schedule, see node.neighbour_phases); 1 = with every neighbour every round.",
    )
    gossip_steps: int = Field(
        1,
        ge=1,
        le=16,
        description="Mixing steps per round: after the merge, exchange and merge the result "
        "with the same partners this many times in all (docs/consensus.md). More than 1 "
        "helps sparse graphs reach consensus in fewer rounds, at that many times the messages.",
    )
    personalize: PersonalizeMode = Field(
        "none",
        description="Keep part of the model at this hospital: 'bias' (the output layer's bias) "
        "or 'head' (the whole output layer, mlp only) is trained on the local rows but never "
        "published or merged; the rest is gossiped as usual (docs/heterogeneity.md).",
    )


class TimeoutSection(_Section):
    startup_seconds: float = Field(60.0, ge=0, description="Wait this long for neighbours.")
    connect_seconds: PositiveFloat = 5.0
    fetch_seconds: PositiveFloat = 15.0
    io_seconds: PositiveFloat = 10.0
    linger_seconds: float = Field(10.0, ge=0, description="Serve after the last round.")


class LedgerSection(_Section):
    """The consortium's chain: membership gates peers; commitments and scores go on chain."""

    enabled: bool = False
    chain: str = Field("http://127.0.0.1:8545", description="JSON-RPC URL of the chain.")
    contract: str = Field("", description="Address of the consortium contract.")
    key_file: Path | None = Field(
        None,
        description="Ethereum key file (mode 0600): a hex key, or a keystore (`medswarm ledger "
        "new-key`) unlocked with $MEDSWARM_KEY_PASSWORD; else $MEDSWARM_ETH_KEY.",
    )
    flush_seconds: PositiveFloat = 1.0
    drain_seconds: float = Field(30.0, ge=0, description="At the end, wait for the outbox.")

    _paths = field_validator("key_file")(_existing_optional_file)

    @field_validator("contract")
    @classmethod
    def _is_address(cls, value: str) -> str:
        if value and not re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
            raise ValueError(f"expected a 0x address of 40 hex digits: {value}")
        return value

    @model_validator(mode="after")
    def _contract_when_enabled(self) -> Self:
        if self.enabled and not self.contract:
            raise ValueError("ledger.contract is required when ledger.enabled is true")
        return self


class ContributionSection(_Section):
    """How this node scores its neighbours (always on with the ledger)."""

    enabled: bool = Field(False, description="Score even without the ledger.")
    # AUC by default: it ignores where a model puts its decision threshold, so hospitals whose
    # prevalence differs from the evaluator's are valued for how well they rank its patients.
    metric: Literal["loss", "accuracy", "auc"] = "auc"
    exact_max_players: int = Field(8, ge=1, le=16)
    budget: int = Field(128, gt=0, description="Coalition evaluations per round when sampling.")
    truncation: float = Field(0.01, ge=0, lt=1)
    seed: int = 0
    replay_tolerance: float = Field(1e-3, ge=0)
    duplicate_tolerance: float = Field(1e-3, ge=0)
    snapshot_every: int = Field(
        5,
        ge=1,
        description="Under secure aggregation and without the ledger: score the neighbours' "
        "DP-protected snapshots every this many rounds (with it: each epoch's last round).",
    )


class EvaluationSection(_Section):
    """What the node does once the last round is over."""

    cross_site: bool = Field(
        False,
        description="Flood this node's final model to every member, score every member's "
        "final model and their consensus on this node's validation split, write the row to "
        "out/cross_site.json and commit its sha256 on the ledger.",
    )
    deadline_seconds: PositiveFloat = Field(
        60.0, description="Wait at most this long for the members' final models."
    )


class AdversarySection(_Section):
    """For simulations only: make this node misbehave the way an attacker would."""

    mode: Literal["none", "replay", "stale", "zeros", "noise", "alie", "ipm"] = Field(
        "none",
        description="What it publishes instead of training: a free rider's model (replay, "
        "stale, zeros, noise) or one crafted from the models it received last round (alie, "
        "ipm; node/adversary.py).",
    )
    noise_std: PositiveFloat = 1.0
    label_flip: float = Field(0.0, ge=0, le=1, description="Share of training labels flipped.")
    update_noise_std: float = Field(0.0, ge=0, description="Gaussian noise on its update.")
    sign_flip: bool = Field(False, description="Publish the negated update.")
    alie_z: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="alie: publish mean - z std of the received models; default the paper's "
        "z_max for f = alie_f and n = the models it crafts from + its group's size (1 alone): "
        "a victim's merge, on a complete graph.",
    )
    alie_f: int = Field(1, ge=1, description="alie: the attackers counted in z_max's formula.")
    ipm_epsilon: PositiveFloat = Field(
        0.5, description="ipm: its update is -epsilon times the mean of the received ones."
    )
    group_dir: Path | None = Field(
        None,
        description="alie in a colluding group: the folder the group's members share, the "
        "simulator's stand-in for their side channel (node/collusion.py).",
    )
    group_size: int = Field(1, ge=1, description="alie in a group: its members, this one too.")

    _paths = field_validator("group_dir")(_resolve)

    @model_validator(mode="after")
    def _group_is_alie(self) -> Self:
        if self.group_dir is not None and self.mode != "alie":
            raise ValueError(
                f"adversary.group_dir: a colluding group publishes ALIE over the union of what "
                f"its members received: needs adversary.mode = 'alie', not {self.mode!r}"
            )
        if self.group_size > 1 and self.group_dir is None:
            raise ValueError("adversary.group_size > 1 needs adversary.group_dir (its folder)")
        return self


class PartitionWindow(_Section):
    """No model of rounds `from` to `to` crosses to or from the peers in `unreachable`: judged
    by the round of the model asked for, so two sides leave the window in step."""

    from_round: int = Field(alias="from", ge=1)
    to_round: int = Field(alias="to", ge=1)
    unreachable: list[str] = Field(description="Peer IDs cut off from this node meanwhile.")


class FaultSection(_Section):
    """For simulations only: faults injected by the node itself."""

    publish_delay_seconds: float = Field(0.0, ge=0, description="A slow node.")
    hold_after_round: int | None = Field(
        None,
        ge=1,
        description="Stop once this round is recorded and checkpointed, and wait there for the "
        "simulator's kill (it polls: a fast node would otherwise be killed rounds later).",
    )
    partitions: list[PartitionWindow] = Field(default_factory=list)

    def unreachable(self, round_: int) -> frozenset[str]:
        return frozenset(
            peer
            for w in self.partitions
            if w.from_round <= round_ <= w.to_round
            for peer in w.unreachable
        )


class PrivacySection(_Section):
    """Record-level differential privacy (DP-SGD) and secure aggregation (docs/privacy.md).

    DP-SGD is on when `target_epsilon` or `noise_multiplier` is set: with `target_epsilon`
    alone the noise is calibrated so the whole run spends exactly that budget; with
    `noise_multiplier` the budget is `target_epsilon` if also given (else unbounded, only
    accounted). Either way the consortium's maximum on the ledger caps it."""

    target_epsilon: PositiveFloat | None = Field(
        None, description="The run's privacy budget (epsilon at `delta`)."
    )
    noise_multiplier: PositiveFloat | None = Field(
        None, description="Gaussian noise std over max_grad_norm; else derived from the target."
    )
    delta: float | None = Field(
        None, gt=0, lt=1, description="Default 1/(10 n), n = this node's training records."
    )
    max_grad_norm: PositiveFloat = Field(1.0, description="Per-record gradient clipping norm.")
    accountant: Literal["rdp", "prv", "gdp"] = Field("rdp", description="Opacus accountant.")
    seeded_noise: bool = Field(
        False,
        description="Simulation only: DP-SGD's batches and noise from training.seed, so runs "
        "repeat. Whoever knows the seed can take the noise back out: never in production.",
    )
    secure_aggregation: bool = Field(
        False, description="Neighbours learn only the weighted sum of the models they merge."
    )
    share_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Self-mask shares needed to unmask, as a fraction of an aggregating "
        "node's other neighbours (rounded up, at least 1).",
    )

    @property
    def dp(self) -> bool:
        """Whether DP-SGD is on."""
        return self.target_epsilon is not None or self.noise_multiplier is not None

    @model_validator(mode="after")
    def _dp_keys_need_dp(self) -> Self:
        # A DP setting without DP-SGD on would be silently ignored: the node would train
        # without the privacy its operator thinks they configured.
        given = sorted({"delta", "max_grad_norm", "accountant"} & self.model_fields_set)
        if given and not self.dp:
            keys = ", ".join(f"privacy.{key} = {getattr(self, key)!r}" for key in given)
            raise ValueError(
                f"{keys} {'is' if len(given) == 1 else 'are'} set but DP-SGD is off: set "
                "privacy.target_epsilon or privacy.noise_multiplier to turn it on, or remove "
                "the DP setting"
            )
        return self


class NodeConfig(_Section):
    source: Path = Field(exclude=True)
    node: NodeSection
    data: DataSection
    model: ModelSection = ModelSection()
    training: TrainingSection = TrainingSection()
    swarm: SwarmSection = SwarmSection()
    timeouts: TimeoutSection = TimeoutSection()
    ledger: LedgerSection = LedgerSection()
    contribution: ContributionSection = ContributionSection()
    privacy: PrivacySection = PrivacySection()
    evaluation: EvaluationSection = EvaluationSection()
    adversary: AdversarySection = AdversarySection()
    faults: FaultSection = FaultSection()
    # A federated-analytics query (node.analytics.query): the node answers it with the other
    # members (statistics, models) instead of training, then stops.
    analytics: "Query | None" = None

    @model_validator(mode="after")
    def _fetch_fits_io(self) -> Self:
        if self.timeouts.fetch_seconds <= self.timeouts.connect_seconds:
            raise ValueError("timeouts.fetch_seconds must exceed timeouts.connect_seconds")
        return self

    @model_validator(mode="after")
    def _secure_aggregation_fits(self) -> Self:
        if problems := secure_aggregation_problems(self):
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _heterogeneity_fits(self) -> Self:
        if problems := heterogeneity_problems(self):
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _phases_fit_rotation(self) -> Self:
        phases, rotation = self.node.neighbour_phases, self.swarm.rotation
        if (rotation > 1 or phases) and len(phases) != len(self.node.neighbours):
            raise ValueError(
                f"node.neighbour_phases must give one phase per neighbour in node.neighbours: "
                f"{len(phases)} phases for {len(self.node.neighbours)} neighbours"
            )
        if any(p >= rotation for p in phases):
            raise ValueError(
                f"node.neighbour_phases must be below swarm.rotation ({rotation}): {phases}"
            )
        return self

    @model_validator(mode="after")
    def _screen_outside_dp(self) -> Self:
        if self.swarm.merge == "ubar" and self.privacy.dp:
            raise ValueError(
                "swarm.merge = 'ubar' with DP-SGD (privacy.target_epsilon or "
                "privacy.noise_multiplier): ubar picks neighbours by their loss on this node's "
                "training rows, a use of them DP-SGD's accounting does not cover; use "
                "multi_krum or clipped_gossip"
            )
        return self

    @model_validator(mode="after")
    def _merge_fits_degree(self) -> Self:
        swarm, listed = self.swarm, len(self.node.neighbours)
        partners = partners_per_round(listed, self.node.neighbour_phases, swarm.rotation)
        has = f"this node has {listed} in node.neighbours" + (
            f", {partners} in its sparsest round of swarm.rotation" if partners != listed else ""
        )
        if problem := byzantine_problem(swarm, partners, has):
            raise ValueError(problem)
        return self


# Per robust rule, the fewest neighbours a round (n = neighbours + 1 models) for f Byzantine
# ones, and the requirement as the docs state it; node.merge keeps its own model in a round
# with fewer arrivals.
NEIGHBOURS_NEEDED = {
    "krum": (lambda f: 2 * f + 2, "n > 2f + 2"),
    "multi_krum": (lambda f: 2 * f + 2, "n > 2f + 2"),
    "bulyan": (lambda f: 4 * f + 2, "n >= 4f + 3"),
    "clipped_gossip": (lambda f: f + 1, "an honest neighbour at least: more than f neighbours"),
    "median": (lambda f: 2 * f, "an honest majority: n >= 2f + 1"),
    "ubar": (lambda f: f + 1, "a neighbour left after dropping the f farthest: more than f"),
}

# The rules that resist Byzantine neighbours (the others need swarm.byzantine = 0).
BYZANTINE_RULES = (
    "median", "trimmed_mean", "krum", "multi_krum", "bulyan", "clipped_gossip", "ubar"
)  # fmt: skip


def byzantine_problem(swarm: SwarmSection, partners: int, has: str) -> str | None:
    """Why `swarm.merge` cannot keep its guarantee against `swarm.byzantine` Byzantine
    neighbours for a node with `partners` neighbours a round (None: it can), naming the keys,
    the requirement and, in `has`, whose neighbour count it is ("node va has 2 ...")."""
    f, rule = swarm.byzantine, swarm.merge
    if f == 0:
        return None
    head = f"swarm.merge = {rule!r} with swarm.byzantine = {f}"
    if rule == "trimmed_mean":
        # k = floor(trim * n) values dropped at each end must cover the f Byzantine ones.
        if int(swarm.trim_fraction * (partners + 1)) >= f:
            return None
        return (
            f"{head} needs floor(swarm.trim_fraction * n) >= f (n = neighbours + 1): "
            f"floor({swarm.trim_fraction:g} * {partners + 1}) < {f}; {has}"
        )
    if rule not in NEIGHBOURS_NEEDED:
        robust = " | ".join(BYZANTINE_RULES)
        return f"{head}: a weighted average tolerates no Byzantine neighbour ({robust})"
    needed, requirement = NEIGHBOURS_NEEDED[rule]
    if partners >= needed(f):
        if rule == "multi_krum" and swarm.multi_krum_m > partners + 1 - f:
            return (
                f"swarm.multi_krum_m = {swarm.multi_krum_m} exceeds n - f = {partners + 1 - f} "
                f"(n = neighbours + 1, f = swarm.byzantine; {has}): it would average a "
                "Byzantine model in"
            )
        return None
    return (
        f"{head} needs {requirement} (n = neighbours + 1): at least {needed(f)} neighbours, "
        f"but {has}"
    )


def partners_per_round(neighbours: int, phases: list[int], rotation: int) -> int:
    """The fewest neighbours a node gossips with in a round: all of them, or under a rotation
    those of the sparsest phase."""
    if rotation == 1:
        return neighbours
    return min(phases.count(p) for p in range(rotation))


def secure_aggregation_problems(cfg: "NodeConfig") -> list[str]:
    """The combinations that would silently break secure aggregation's guarantee (or cannot
    run): each a message naming the keys and what to do instead."""
    if not cfg.privacy.secure_aggregation:
        return []
    problems = []
    if cfg.swarm.merge not in SECURE_AGGREGATION_RULES:
        rules = " or ".join(repr(r) for r in SECURE_AGGREGATION_RULES)
        problems.append(
            f"privacy.secure_aggregation needs swarm.merge = {rules}: {cfg.swarm.merge!r} "
            "needs every neighbour's model, which secure aggregation hides"
        )
    if cfg.adversary.mode in ("alie", "ipm"):
        problems.append(
            f"privacy.secure_aggregation hides each neighbour's model, which adversary.mode = "
            f"{cfg.adversary.mode!r} crafts its own from: simulate it without secure aggregation"
        )
    if cfg.swarm.gossip_steps > 1:
        problems.append(
            "privacy.secure_aggregation needs swarm.gossip_steps = 1: the extra mixing steps "
            "exchange merged models in clear"
        )
    if cfg.swarm.rotation > 1:
        problems.append(
            "privacy.secure_aggregation needs swarm.rotation = 1: with a rotation a node merges "
            "one neighbour a round, and a sum of one model is that model"
        )
    if len(cfg.node.neighbours) < 2:
        problems.append(
            f"privacy.secure_aggregation needs at least 2 neighbours in node.neighbours, got "
            f"{len(cfg.node.neighbours)}: a sum of one model is that model"
        )
    if cfg.evaluation.cross_site and not cfg.privacy.dp:
        problems.append(
            "privacy.secure_aggregation with evaluation.cross_site needs DP-SGD "
            "(privacy.target_epsilon or privacy.noise_multiplier): the cross-site evaluation "
            "floods every member's final model in clear, from which the members' last updates, "
            "hidden by secure aggregation, could be solved for"
        )
    scoring = cfg.ledger.enabled or cfg.contribution.enabled
    if scoring and not cfg.privacy.dp:
        problems.append(
            "privacy.secure_aggregation with contribution scoring (ledger.enabled or "
            "contribution.enabled) needs DP-SGD (privacy.target_epsilon or "
            "privacy.noise_multiplier): the scorer sees each neighbour's DP-protected "
            "snapshot, which without DP would be the very model secure aggregation hides"
        )
    return problems


def heterogeneity_problems(cfg: "NodeConfig") -> list[str]:
    """The combinations FedProx and personalization cannot run with: each a message naming the
    keys and what to do instead."""
    problems = []
    if cfg.training.prox_mu > 0 and cfg.privacy.dp:
        problems.append(
            f"training.prox_mu = {cfg.training.prox_mu:g} with DP-SGD (privacy.target_epsilon "
            "or privacy.noise_multiplier): DP-SGD clips and noises each record's gradient, and "
            "the proximal term belongs to no record; set training.prox_mu = 0"
        )
    mode = cfg.swarm.personalize
    if mode == "none":
        return problems
    if mode == "head" and cfg.model.name == "logreg":
        problems.append(
            "swarm.personalize = 'head' with model.name = 'logreg': its output layer is the "
            "whole model, nothing would be shared; use 'bias' (a site's own intercept) or mlp"
        )
    if cfg.evaluation.cross_site:
        problems.append(
            f"swarm.personalize = {mode!r} with evaluation.cross_site: the cross-site "
            "evaluation floods each node's final model, whose local part personalization keeps "
            "at the hospital; set evaluation.cross_site = false (the simulator scores "
            "personalized models at every site from the nodes' checkpoints)"
        )
    if cfg.adversary.mode in ("alie", "ipm"):
        problems.append(
            f"swarm.personalize = {mode!r} with adversary.mode = {cfg.adversary.mode!r}: the "
            "crafted attacks are simulated without personalization; set swarm.personalize = "
            "'none'"
        )
    return problems


def load_config(path: Path, overrides: list[str] | None = None) -> NodeConfig:
    """Parse and validate a node config; `overrides` are `dotted.key=toml-value` strings."""
    path = path.resolve()
    raw = _read_toml(path, "config")
    for item in overrides or []:
        _apply_override(raw, item, path)
    try:
        return NodeConfig.model_validate({**raw, "source": path}, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None


def load_query(path: Path) -> Query:
    """A federated-analytics query file (`medswarm stats QUERY`), with the file and the key in
    every error."""
    raw = _read_toml(path, "query")
    try:
        return Query.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc, "query")) from None


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    """The TOML file at `path` (a `what` file), or a ConfigError naming the file and the fault."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def format_validation_error(path: Path, exc: ValidationError, what: str = "configuration") -> str:
    """Pydantic's errors as `file: invalid <what>` and one `  key: problem` line each (the
    scenario loader shares it)."""
    lines = [f"{path}: invalid {what}"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {key}: {err['msg']}{shown}")
    return "\n".join(lines)


def _apply_override(raw: dict[str, Any], item: str, path: Path) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected dotted.key=value")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word is taken as a string
    *parents, leaf = key.strip().split(".")
    target = raw
    for part in parents:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: override {key}: {part} is not a table")
        target = child
    target[leaf] = value
