"""`medswarm node init`: a commented example config and a fresh identity key."""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit

from gossip.identity import create_key_file, create_x25519_key_file, peer_id_of
from node.config import MERGE_RULE_NAMES

CONFIG_TEMPLATE = """\
# medswarm node configuration. Relative paths are relative to this file's folder.
# Override any key at start: medswarm node run --config node.toml --set training.epochs=2

[node]
name = "{name}"                       # shown in logs and reports
key_file = "{key_file}"               # libp2p identity (mode 0600); never put keys in this file
x25519_key_file = "x25519.key"        # masking key (mode 0600), registered on chain next to the
                                      # peer ID: the secure sums and secure aggregation use it
{peer_keys_line}
listen = "{listen}"    # TCP multiaddr this node listens on
# Neighbours: full multiaddrs ending in /p2p/<peer id>; each hospital prints its own with
# `medswarm node init` or finds it in <output_dir>/peer.json once running.
neighbours = [{neighbours}]
# With [swarm] rotation > 1: per neighbour above, the phase (round % rotation) of the rounds in
# which this node gossips with it. Both ends of a link must give it the same phase.
neighbour_phases = []
output_dir = "{output_dir}"                  # metrics, checkpoints, cleaning report, summary
keep_models = {keep_models}                  # keep out/models/round-<r>.safetensors (audits, plots)
fsync = true                          # flush each checkpoint to disk (safe against power loss)
evaluate_local = true                 # also score the trained model before the merge

[data]
path = "{data}"      # this hospital's records (CSV or Parquet)
schema = "{schema}"  # the consortium's shared schema
validation_fraction = 0.25            # held out, seeded, for evaluation and scoring; 0 (only
                                      # with test_path): every record trains, and the node
                                      # evaluates and scores its neighbours on the test set
split_seed = 0
# test_path = "test.parquet"          # optional: a test set shared by the consortium, in the
                                      # schema's format (a file that is not stops the node at
                                      # start, naming the column); the merged model is scored
                                      # on it every round (metrics: "test")
# scaling = "scaling.json"            # optional: the consortium's reference scaling ("mean" and
                                      # "std" per model input column) instead of agreeing the
                                      # pooled one at start (messages grow with members squared)

[model]
name = "{model}"                         # logreg | mlp
hidden = [32]                         # mlp hidden layer sizes
init_seed = 0                         # the same at every hospital: all start from one model

[training]
epochs = 1                            # local epochs per round (0: averaging only)
batch_size = 32
lr = 0.05
optimizer = "sgd"                     # sgd | adam
momentum = 0.0
weight_decay = 0.0
prox_mu = 0.0                         # FedProx: pull each update towards the round's start
seed = 0
threads = 1                           # torch threads

[swarm]
rounds = {rounds}
# The merge rule; the default, neighbourhood, reaches consensus on the sample-weighted average
# (in one round on a complete graph: docs/consensus.md).
merge = "neighbourhood"               # {merge_rules}
trim_fraction = 0.2                   # for trimmed_mean
# Byzantine-robust rules (krum, multi_krum, bulyan, clipped_gossip, ubar; docs/consensus.md)
# assume at most `byzantine` neighbours lie, and need enough neighbours for it: krum and
# multi_krum n > 2f + 2 (n = neighbours + 1), bulyan n >= 4f + 3, clipped_gossip and ubar more
# than f neighbours, median n >= 2f + 1, trimmed_mean floor(trim_fraction * n) >= f. A node
# that cannot is refused.
byzantine = 0                         # f; the weighted rules (neighbourhood, metropolis) need 0
multi_krum_m = 0                      # multi_krum: models averaged (0: n - f)
clip_radius = 0.0                     # clipped_gossip: tau, L2 over the whole model (0: adaptive,
                                      # the (f+1)-th largest distance to a neighbour this round)
self_weight = 0.5                     # ubar: the own model's share of the merge
max_staleness = 2                     # accept neighbour models from rounds >= r - this
rotation = 1                          # gossip with each neighbour every this many rounds
gossip_steps = 1                      # mixing steps per round (more: faster consensus)
# Keep part of the model here, trained on this hospital's rows only, never published or merged:
personalize = "none"                  # none | bias (the output's bias) | head (the output layer)

[timeouts]
startup_seconds = 60                  # wait for neighbours to come up
connect_seconds = 5
fetch_seconds = 15                    # per neighbour per round: a slower one is skipped
io_seconds = 10
linger_seconds = 10                   # keep serving after the last round

[ledger]
# The consortium's chain. When enabled, only peers registered and active on chain are served
# and merged; the node commits the sha256 of each round's model and reports its neighbours'
# contribution scores once per epoch, through a durable outbox (out/outbox.sqlite).
enabled = {ledger_enabled}
chain = "{ledger_chain}"   # JSON-RPC URL
contract = "{ledger_contract}"   # the consortium contract's address
{ledger_key_line}
flush_seconds = 1                     # how often the outbox sends
drain_seconds = 30                    # at the end, wait this long for queued writes

[contribution]
# How this node scores the neighbours whose models it received, on its own validation split
# (always on with the ledger): Shapley values of the game "merge these models".
metric = "auc"                        # auc | loss | accuracy (AUC ignores prevalence shifts)
exact_max_players = 8                 # exact Shapley up to this many neighbours, sampling above
budget = 128                          # coalition evaluations per round when sampling
truncation = 0.01
seed = 0
replay_tolerance = 0.001              # a model this close to ones already seen scores 0
duplicate_tolerance = 0.001           # models this close to each other share one score
snapshot_every = 5                    # under secure aggregation, without the ledger: score the
                                      # neighbours' DP-protected snapshots every this many rounds

[privacy]
# Record-level differential privacy (DP-SGD, Opacus) and secure aggregation; see
# docs/privacy.md for exactly what each guarantees. DP-SGD is on once either of these is set:
# target_epsilon = 8.0                # the run's budget; the noise is calibrated to spend it
# noise_multiplier = 1.1              # or the noise itself (target_epsilon is then the budget)
# delta = 1e-5                        # default 1/(10 n), n = this node's training records
# max_grad_norm = 1.0                 # per-record gradient clipping
# accountant = "rdp"                  # rdp | prv | gdp (Opacus)
secure_aggregation = false            # neighbours learn only the weighted sum of what they merge
share_threshold = 0.5                 # self-mask shares needed, as a fraction of the others

[evaluation]
# After the last round: every member's final model scored on this hospital's validation split.
cross_site = false                    # flood this node's final model to every member, score
                                      # each member's and their consensus (weighted by rows);
                                      # the row goes to out/cross_site.json, its sha256 on the
                                      # ledger (with secure aggregation: needs DP-SGD)
deadline_seconds = 60                 # wait at most this long for the members' final models
"""

PEER_KEYS_FILE = "peer-keys.json"  # a local swarm's X25519 public keys, when it has no ledger


def render_config(
    *,
    name: str,
    key_file: str,
    listen: str,
    neighbours: list[str],
    output_dir: str,
    data: str,
    schema: str,
    model: str = "mlp",
    rounds: int = 20,
    ledger_contract: str = "",
    ledger_key_file: str = "",
    ledger_chain: str = "http://127.0.0.1:8545",
    peer_keys: str = "",
) -> str:
    key_line = (
        f'key_file = "{ledger_key_file}"' if ledger_key_file else '# key_file = "eth.key"'
    ) + "                  # Ethereum key or keystore, mode 0600 (or $MEDSWARM_ETH_KEY)"
    peer_keys_line = (
        f'peer_keys = "{peer_keys}"' if peer_keys else f'# peer_keys = "{PEER_KEYS_FILE}"'
    ) + "   # without the ledger: the members' X25519 public keys (peer ID -> hex)"
    return CONFIG_TEMPLATE.format(
        peer_keys_line=peer_keys_line,
        ledger_enabled="true" if ledger_contract else "false",
        keep_models="true" if ledger_contract else "false",
        ledger_chain=ledger_chain,
        ledger_contract=ledger_contract,
        ledger_key_line=key_line,
        name=name,
        key_file=key_file,
        listen=listen,
        neighbours=", ".join(f'"{n}"' for n in neighbours),
        output_dir=output_dir,
        data=data,
        schema=schema,
        model=model,
        rounds=rounds,
        merge_rules=" | ".join(MERGE_RULE_NAMES),
    )


def write_peer_keys(path: Path, keys: Mapping[str, bytes]) -> None:
    """A `node.peer_keys` file: the members' X25519 public keys, peer ID -> hex."""
    path.write_text(json.dumps({p: k.hex() for p, k in sorted(keys.items())}, indent=1))


def with_settings(text: str, settings: Mapping[str, Any]) -> str:
    """`text` (a config) with `dotted.key = value` settings applied, comments kept: what the
    simulator uses so each node's file shows the settings it runs with."""
    doc = tomlkit.parse(text)
    for key, value in settings.items():
        *tables, leaf = key.split(".")
        target: Any = doc
        for name in tables:
            if name not in target:
                target[name] = tomlkit.table()
            target = target[name]
        target[leaf] = value
    return tomlkit.dumps(doc)


def init_node(
    folder: Path, name: str, data: str, schema: str, listen: str, neighbours: list[str]
) -> tuple[Path, str]:
    """Write folder/node.toml, folder/identity.key and folder/x25519.key; return the config
    path and peer id."""
    config_path = folder / "node.toml"
    key_path = folder / "identity.key"
    masking_path = folder / "x25519.key"
    for existing in (config_path, key_path, masking_path):
        if existing.exists():
            raise FileExistsError(f"{existing} already exists; not overwriting")
    folder.mkdir(parents=True, exist_ok=True)
    peer_id = peer_id_of(create_key_file(key_path))
    create_x25519_key_file(masking_path)
    config_path.write_text(
        render_config(
            name=name,
            key_file="identity.key",
            listen=listen,
            neighbours=neighbours,
            output_dir="out",
            data=data,
            schema=schema,
        )
    )
    return config_path, peer_id
