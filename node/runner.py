"""The node's life: intake, agree on scaling with the swarm, then the rounds of docs/design.md.

Each round: train locally (worker thread, so the host keeps serving), snapshot and serve the
parameters, fetch the neighbours' concurrently with deadlines, merge, evaluate, append a metrics
record, checkpoint. A neighbour that is dead, slow or invalid is skipped for the round. A node
restarted over its output folder resumes from the last checkpoint.
"""

import dataclasses
import hashlib
import json
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import multiaddr
import numpy as np
import torch
import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from libp2p.peer.peerinfo import PeerInfo

from gossip import secure_agg, wire
from gossip.errors import GossipError, PeerMessageError, PeerUnavailable
from gossip.exchange import ParamExchange, SnapshotStore
from gossip.host import build_host, close_host, ensure_connected, parse_peer_addr
from gossip.identity import load_key_file, load_x25519_key_file, peer_id_of, x25519_public
from gossip.secure_agg import Deadlines, MaskingKeys, SecAggMember
from gossip.secure_sum import Flood, flood_available
from node import cross_site
from node import merge as merging
from node.adversary import CRAFTED, alie, alie_z, flip_labels, forged_params, ipm, tamper_update
from node.agreement import agree_session_only, agree_start
from node.allocator import settle_for_rounds
from node.checkpoint import (
    Checkpoint,
    load_checkpoint,
    params_bytes,
    save_checkpoint,
    save_params,
    write_atomic,
)
from node.collusion import pooled
from node.config import NodeConfig
from node.contribution import (
    ContributionScorer,
    RoundScores,
    ScoringSettings,
    validation_value,
)
from node.dataset import (
    CleanTable,
    DataSchema,
    Split,
    load_frame,
    load_schema,
    load_table,
    load_test_set,
    split_validation,
)
from node.errors import AnalyticsError, CheckpointError, ConfigError, NodeError
from node.keyring import Keyring
from node.merge import MASS_RULES, PAIR_WEIGHTS, MergeSettings, merge_secure_sum, neighbour_scale
from node.metrics import ANALYTICS_PROGRESS, append_record, read_records
from node.models import build_model
from node.offload import Offload
from node.params import Neighbour, Params, flatten, load_params, model_params, size_of
from node.personalize import joined, local_names, local_part, shared_part
from node.scaling import Scaler
from node.training import (
    EvalResult,
    TrainSettings,
    evaluate,
    loss_meter,
    train_local,
    training_seed,
)

if TYPE_CHECKING:  # imported where used: a node without DP or ledger never pays for
    # Opacus or web3 at start-up (seconds of imports each)
    import pandas as pd

    from node.membership import Membership
    from node.privacy import DPPlan, PrivacyAccountant

log = logging.getLogger(__name__)

RoundCallback = Callable[[dict[str, Any]], None]
QUIET_SECONDS = 1.0  # after the last round: no secure-aggregation request for this long
LINGER_GRACE_SECONDS = 2.0  # after every partner was sent the final round
MIX = "mix"  # the snapshot kind of a round's extra mixing steps (swarm.gossip_steps > 1)


PublishTransform = Callable[[Params], Params]


def unchanged(params: Params) -> Params:
    """The default publish transform: publish the local update as it is."""
    return params


@dataclass
class RunState:
    """What one run's rounds share, and what each round carries to the next."""

    model: torch.nn.Module
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    initial: Params
    current: Params  # what the model holds between rounds: the last merge (or the start)
    specs: tuple[wire.TensorSpec, ...]
    size: int  # the model's parameter count (what secure aggregation masks)
    train_settings: TrainSettings
    scorer: ContributionScorer | None
    epoch_scores: dict[str, float]  # per neighbour, summed over the epoch's rounds so far
    forger: np.random.Generator  # the simulated adversary's randomness
    resumed_from: int | None  # the checkpoint's round, until the first round's record has it
    privacy: "PrivateTraining | None" = None  # DP-SGD's plan and budget, when on
    test_x: np.ndarray | None = None  # the consortium's common test set (data.test_path), scaled
    test_y: np.ndarray | None = None
    # What val_x and val_y are: the validation split, or without one (validation_fraction = 0)
    # the common test set, which then also serves for scoring the neighbours.
    evaluated_on: str = "validation"
    training: Offload = field(default_factory=Offload)
    scoring: Offload = field(default_factory=Offload)
    # A simulated crafting adversary (alie, ipm): the neighbours' models of its last round as
    # they arrived, and what it held when that round began (IPM measures their updates from it).
    received: list[Neighbour] = field(default_factory=list)
    received_base: Params = field(default_factory=dict)
    # swarm.personalize: the names kept at this node (never published or merged; empty: none),
    # and their values as this round's training left them.
    local: tuple[str, ...] = ()
    kept: Params = field(default_factory=dict)
    # swarm.merge = "ubar": a model's loss on this node's training rows (its screen).
    screen_loss: Callable[[Params], float] | None = None


@dataclass
class PrivateTraining:
    """DP-SGD's plan and what the rounds spent; once the budget cannot pay for a round, the
    node stops publishing new models (`retired_at`: the first round it did not train)."""

    plan: "DPPlan"
    accountant: "PrivacyAccountant"
    retired_at: int | None = None

    def record(self) -> dict[str, Any]:
        """The metrics record's and the ledger's view of the budget."""
        return {
            "epsilon": self.accountant.spent(),
            "delta": self.plan.delta,
            "noise_multiplier": self.plan.noise_multiplier,
            "budget": self.plan.budget,
            "accountant": self.plan.accountant,
            "retired_at": self.retired_at,
        }


def _sole_exception(group: BaseExceptionGroup) -> BaseException | None:
    """The one exception inside `group` and any groups nested in it, or None if several."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending and len(leaves) < 2:
        item = pending.pop()
        if isinstance(item, BaseExceptionGroup):
            pending += item.exceptions
        else:
            leaves.append(item)
    return leaves[0] if len(leaves) == 1 else None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# The common test set, cleaned per (file, schema) and scaled per (file, schema, scaling): the
# inproc backend's nodes share one process, one file and the agreed scaling, so they share one
# copy (read-only).
_TEST_TABLES: dict[tuple[str, str], CleanTable] = {}
_TEST_SETS: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
_TEST_SETS_KEPT = 4


def shared_test_table(path: Path, schema_path: Path) -> CleanTable:
    """The test set at `path` cleaned by the schema (`load_test_set`: a file that does not
    match it is a `DataError` naming the file and the column), shared in this process."""
    key = (str(path), str(schema_path))
    if key not in _TEST_TABLES:
        if len(_TEST_TABLES) >= _TEST_SETS_KEPT:
            _TEST_TABLES.clear()
        _TEST_TABLES[key] = load_test_set(path, load_schema(schema_path))
    return _TEST_TABLES[key]


def shared_test_set(path: Path, schema_path: Path, scaler: Scaler) -> tuple[np.ndarray, np.ndarray]:
    """The test set at `path` cleaned by the schema and scaled by `scaler` (float32, as the
    model computes), shared by every caller in this process with the same three: not to be
    written to."""
    key = (str(path), str(schema_path), json.dumps(scaler.to_dict(), sort_keys=True))
    if key not in _TEST_SETS:
        table = shared_test_table(path, schema_path)
        x = np.ascontiguousarray(scaler.transform(table.features), dtype=np.float32)
        y = table.target
        if len(_TEST_SETS) >= _TEST_SETS_KEPT:
            _TEST_SETS.clear()
        _TEST_SETS[key] = (x, y)
        # The float64 table can go: the nodes of a run share one scaling, so the others find
        # the scaled copy (another scaling reads the file again).
        _TEST_TABLES.pop((str(path), str(schema_path)), None)
    return _TEST_SETS[key]


class NodeRunner:
    def __init__(
        self,
        cfg: NodeConfig,
        on_round: RoundCallback | None = None,
        publish_transform: PublishTransform = unchanged,
        cpu: trio.CapacityLimiter | None = None,
    ) -> None:
        self.cfg = cfg
        # Nodes that share a process share its GIL: their training and scoring threads take
        # turns through this limiter (one at a time) instead of thrashing the GIL together.
        self.cpu = cpu
        self.on_round = on_round or (lambda _record: None)
        # What the node publishes is this of its local update: the seam for differential-privacy
        # noise or compression. Neighbours, the ledger's commitment and the node's own merge
        # all see the transformed parameters.
        self.publish_transform = publish_transform
        self.out = cfg.node.output_dir
        self.key_pair = load_key_file(cfg.node.key_file)
        self.peer_id = peer_id_of(self.key_pair)
        self.neighbours: list[PeerInfo] = [parse_peer_addr(a) for a in cfg.node.neighbours]
        self.degree = len(self.neighbours)
        self.round = 0  # the round in progress (0: before training)
        self.session = ""  # agreed by the members at start: every mask of the run is bound to it
        self.secagg: SecAggMember | None = None  # this node's part in its neighbours' aggregations
        # Each neighbour's training rows, as its last valid message claimed: what this node's
        # closed-neighbourhood mass is summed from (a node's count is fixed for its run).
        self.peer_samples: dict[str, int] = {}

    # -- setup ------------------------------------------------------------------------------

    def _load_data(self) -> Split:
        schema = load_schema(self.cfg.data.schema_file)
        table = load_table(self.cfg.data.path, schema)
        write_atomic(
            self.out / "cleaning.json", json.dumps(table.report.to_dict(), indent=1).encode()
        )
        split = split_validation(table, self.cfg.data.validation_fraction, self.cfg.data.split_seed)
        if self.cfg.data.test_path is not None:  # a test set that does not fit fails here, early
            shared_test_table(self.cfg.data.test_path, self.cfg.data.schema_file)
        if self.cfg.adversary.label_flip > 0:  # a simulated label-flipping attacker
            rng = np.random.default_rng(self.cfg.training.seed)
            flipped = flip_labels(split.train_y, self.cfg.adversary.label_flip, rng)
            split = dataclasses.replace(split, train_y=flipped)
        return split

    async def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.cfg.analytics is not None:
            schema = load_schema(self.cfg.data.schema_file)
            frame = load_frame(self.cfg.data.path, schema)
            return await self._joined(lambda: self._answer(frame, schema))
        torch.set_num_threads(self.cfg.training.threads)
        split = self._load_data()
        self.samples = len(split.train_y)
        checkpoint = load_checkpoint(self.out / "checkpoint")

        async def train() -> dict[str, Any]:
            nonlocal split
            scaler, start = await self._scaler_and_start(split, checkpoint)
            run = self._start(split, scaler, checkpoint)
            # The rounds use only the scaled float32 copy: the float64 records can go (a tenth
            # of a 20-site simulation's memory).
            del split
            if self.cfg.privacy.secure_aggregation:
                self.secagg = SecAggMember(
                    self.peer_id, self.session, self.masking,
                    PAIR_WEIGHTS[self.cfg.swarm.merge], self.cfg.privacy.share_threshold,
                )  # fmt: skip
                self.exchange.handlers[secure_agg.KIND] = self.secagg.handle
            summary = await self._train(run, scaler, start)
            await self._linger()
            return summary

        return await self._joined(train)

    async def _joined(self, work: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """`work` done as a member of the swarm: on the ledger (when on), with the masking
        keys, a libp2p host listening and the neighbours given time to come up."""
        masking_key = self._masking_key()
        self.membership = await self._join_ledger(x25519_public(masking_key))
        self.keyring = Keyring(self.membership, self.cfg.node.peer_keys)
        self.masking = MaskingKeys(masking_key, self.keyring.public_of)
        host = build_host(self.key_pair)
        self.exchange = ParamExchange(
            host, SnapshotStore(), self.cfg.timeouts.io_seconds,
            allow_peer=self._is_member, link_up=self._link_up,
        )  # fmt: skip
        try:
            async with host.run([multiaddr.Multiaddr(self.cfg.node.listen)]):
                self._announce([str(a) for a in host.get_addrs()])
                await self._wait_for_neighbours()
                try:
                    summary = await work()
                except BaseException:  # a crash or a kill: stop the outbox worker, keep the queue
                    if self.membership is not None:
                        # In a thread: the worker may be mid-request, and in the simulator's
                        # inproc backend this event loop is every node's.
                        with trio.CancelScope(shield=True):
                            await trio.to_thread.run_sync(self.membership.close, 0)
                    raise
                if self.membership is not None:
                    left = await trio.to_thread.run_sync(
                        self.membership.close, self.cfg.ledger.drain_seconds
                    )
                    if left:
                        log.warning("%d ledger writes still queued in the outbox", left)
        except BaseExceptionGroup as group:
            # host.run's nursery wraps what `work` raised: the node's own error, unwrapped, is
            # what the command line and the simulator report.
            if isinstance(cause := _sole_exception(group), (NodeError, GossipError)):
                raise cause from None
            raise
        finally:
            # Also on a crash or a cancel (the simulator's in-process kill): without it the
            # listener (a libp2p system task) keeps accepting, lost connections stay open, and
            # peers hang on them.
            await close_host(host)
        return summary

    async def _answer(self, frame: "pd.DataFrame", schema: DataSchema) -> dict[str, Any]:
        """The [analytics] query answered with every member, written to analytics.json (the
        answer, or the error that stopped it: never a partial number)."""
        from node.analytics.disclosure import ReleaseLog
        from node.analytics.swarm import answer_over_swarm

        assert self.cfg.analytics is not None
        members = await self.keyring.wait_for_keys(self.cfg.timeouts.startup_seconds)
        release_log = ReleaseLog(self.out / "analytics-released.json", self.cfg.data.path)
        # An earlier query's answer must not stand for this one's if this one is cut short.
        self.analytics_path.unlink(missing_ok=True)
        self.analytics_progress_path.unlink(missing_ok=True)
        began = time.perf_counter()
        try:
            answer = await answer_over_swarm(
                self.exchange, self.key_pair, self.masking, members, self.neighbours,
                self.cfg.timeouts, frame, schema, self.cfg.analytics, release_log, self._summed,
            )  # fmt: skip
        except (AnalyticsError, GossipError) as exc:
            failed = {"node": self.cfg.node.name, "error": str(exc)}
            write_atomic(self.analytics_path, json.dumps(failed, indent=1).encode())
            raise
        # The answer is the same at every member; the traffic and time are this node's.
        result = {
            "node": self.cfg.node.name,
            "answer": answer,
            "seconds": time.perf_counter() - began,
            "bytes_sent": self.exchange.counters.bytes_sent,
            "bytes_received": self.exchange.counters.bytes_received,
        }
        write_atomic(self.analytics_path, json.dumps(result, indent=1).encode())
        await self._linger_quiet()
        return {"analytics": result}

    async def _summed(self, k: int) -> None:
        """After the query's k-th secure sum: a progress record (the simulator paces its faults
        by it, as by training rounds) and the simulated kill's hold."""
        append_record(self.analytics_progress_path, {"round": k, "analytics": {"sums": k}})
        if k == self.cfg.faults.hold_after_round:
            log.info("holding after secure sum %d until killed (simulated fault)", k)
            await trio.sleep_forever()

    async def _linger_quiet(self) -> None:
        """Serve on until no neighbour has asked anything for a moment (a neighbour may still
        be gathering the last sum's rows), or the linger time ends."""
        counters = self.exchange.counters
        with trio.move_on_after(self.cfg.timeouts.linger_seconds):
            sent, quiet_since = counters.bytes_sent, trio.current_time()
            while trio.current_time() - quiet_since < LINGER_GRACE_SECONDS:
                await trio.sleep(0.1)
                if counters.bytes_sent != sent:
                    sent, quiet_since = counters.bytes_sent, trio.current_time()

    def _masking_key(self) -> X25519PrivateKey:
        path = self.cfg.node.x25519_key_file
        if path is None:
            raise ConfigError(
                f"{self.cfg.source}: node.x25519_key_file is required: the scaling agreement "
                "is a secure sum whose masks come from it (`medswarm node init` writes one)"
            )
        return load_x25519_key_file(path)

    async def _join_ledger(self, masking_public: bytes) -> "Membership | None":
        if not self.cfg.ledger.enabled:
            return None
        from node.membership import Membership

        membership = await trio.to_thread.run_sync(
            Membership, self.cfg.ledger, self.peer_id, self.out / "outbox.sqlite"
        )
        # The registry is the PKI: the other members find this node's masking key there.
        await trio.to_thread.run_sync(membership.ensure_x25519_key, masking_public)
        trains = self.cfg.analytics is None
        if membership.max_epsilon is not None and trains and not self.cfg.privacy.dp:
            raise ConfigError(
                f"{self.cfg.source}: the consortium caps each member's epsilon at "
                f"{membership.max_epsilon:g} (contract {self.cfg.ledger.contract}), but this "
                "node trains without DP-SGD: set privacy.target_epsilon (at most that)"
            )
        log.info("ledger: member %s, %d active", membership.address, len(membership.active_peers))
        return membership

    def _announce(self, addrs: list[str]) -> None:
        """peer.json: where the neighbours (and the simulator) find this node."""
        info = {"name": self.cfg.node.name, "peer_id": self.peer_id, "addrs": addrs}
        write_atomic(self.out / "peer.json", json.dumps(info).encode())
        log.info("node %s listening on %s", self.cfg.node.name, addrs)

    async def _scaler_and_start(
        self, split: Split, checkpoint: Checkpoint | None
    ) -> tuple[Scaler, int]:
        """A fresh node agrees on the scaling with the swarm; a restarted one reads its own."""
        if checkpoint is None:
            reference = self.cfg.data.scaling
            # With the consortium's reference scaling, only secure aggregation needs the members
            # (and a session) at start.
            agree = reference is None or self.cfg.privacy.secure_aggregation
            members: tuple[str, ...] = ()
            if agree:
                members = await self.keyring.wait_for_keys(self.cfg.timeouts.startup_seconds)
            if reference is None:
                self.session, scaler = await agree_start(
                    self.exchange, self.key_pair, self.masking, members, self.neighbours,
                    self.cfg.timeouts, split.train_x,
                )  # fmt: skip
            else:
                scaler = self._reference_scaler(reference, split)
                if agree:
                    self.session = await agree_session_only(
                        self.exchange, self.key_pair, members, self.neighbours, self.cfg.timeouts
                    )
            # Fixed for the whole run: saved once, not in every round's checkpoint.
            write_atomic(self.scaler_path, json.dumps(scaler.to_dict()).encode())
            session = {"session": self.session, "members": list(members)}
            write_atomic(self.session_path, json.dumps(session).encode())
            return scaler, 1
        self.session = self._saved_session()
        scaler = self._saved_scaler()
        self._truncate_metrics(checkpoint.round)
        log.info("resuming from checkpoint of round %d", checkpoint.round)
        return scaler, checkpoint.round + 1

    def _allows(self, peer: str) -> bool:
        """Only active members are served and merged once the ledger is on (and, in a
        simulated partition, only peers on this side)."""
        return self._link_up(peer) and self._is_member(peer)

    def _is_member(self, peer: str) -> bool:
        return self.membership is None or self.membership.allows(peer)

    def _link_up(self, peer: str, kind: str | None = None, ident: int | None = None) -> bool:
        """False while a simulated partition puts the peer on the other side: for a model, in
        the round it is of (a mixing step's id is round * steps + step); else in this one."""
        round_ = self.round
        if ident is not None and kind in ("params", secure_agg.KIND):
            round_ = ident
        elif ident is not None and kind == MIX:
            round_ = ident // self.cfg.swarm.gossip_steps
        return peer not in self.cfg.faults.unreachable(round_)

    async def _wait_for_neighbours(self) -> None:
        """Nodes start at different moments: give the neighbours a bounded time to come up."""
        deadline = trio.current_time() + self.cfg.timeouts.startup_seconds
        pending = list(self.neighbours)
        while pending and trio.current_time() < deadline:
            still = []
            for info in pending:
                try:
                    await ensure_connected(
                        self.exchange.host, info, self.cfg.timeouts.connect_seconds
                    )
                except PeerUnavailable:
                    still.append(info)
            pending = still
            if pending:
                await trio.sleep(0.25)
        for info in pending:
            log.warning("neighbour %s unreachable at start; going on", info.peer_id)

    # -- rounds -----------------------------------------------------------------------------

    async def _train(self, run: RunState, scaler: Scaler, start: int) -> dict[str, Any]:
        cfg = self.cfg
        records = read_records(self.metrics_path)
        record: dict[str, Any] = records[-1] if records else {}
        settle_for_rounds()  # the intake's memory is given back; the rounds reuse the heap's
        for r in range(start, cfg.swarm.rounds + 1):
            record = await self._round(run, r)
            if r == cfg.faults.hold_after_round:
                log.info("holding after round %d until killed (simulated fault)", r)
                await trio.sleep_forever()
        summary = {
            "node": cfg.node.name,
            "peer_id": self.peer_id,
            "rounds": cfg.swarm.rounds,
            "final": record,
            "peak_rss_mb": peak_rss_mb(),
            "scaler": scaler.to_dict(),
        }
        write_atomic(self.out / "summary.json", json.dumps(summary, indent=1).encode())
        if cfg.evaluation.cross_site:
            await self._cross_site(run)
        return summary

    async def _cross_site(self, run: RunState) -> None:
        """The cross-site evaluation (node/cross_site.py): flood the final model to every
        member, score every one that arrives and their consensus on the validation split,
        write the row and queue its digest on chain. A member that never arrives (a node that
        is down) is listed as missing, not an error."""
        members = self._members()
        flood = Flood(
            session=f"cross-site/{self.session}",
            members=members,
            neighbours=tuple(self._reachable(self.neighbours)[0]),
            fetch_seconds=self.cfg.timeouts.fetch_seconds,
            connect_seconds=self.cfg.timeouts.connect_seconds,
            deadline_seconds=self.cfg.evaluation.deadline_seconds,
        )
        mine = cross_site.encode_model(run.current, self.samples)
        rows = await flood_available(self.exchange, self.key_pair, flood, mine)
        models: dict[str, tuple[int, Params]] = {}
        for peer, data in rows.items():
            try:
                models[peer] = cross_site.decode_model(data, run.current)
            except ValueError as exc:  # signed by its author, yet unusable: left out
                log.warning("cross-site evaluation: the final model of %s: %s", peer, exc)
        name = self.cfg.node.name
        if run.evaluated_on != "validation":
            why = (
                "no validation split (data.validation_fraction = 0): this node scores on the "
                "common test set, which is not a site's own"
            )
            doc = cross_site.document(name, self.peer_id, None, why)
        else:
            c = self.cfg.model
            net = build_model(c.name, run.val_x.shape[1], c.hidden, c.init_seed)
            row = await run.scoring.run(
                cross_site.evaluate_row, net, run.val_x, run.val_y, self.peer_id, members, models
            )
            doc = cross_site.document(name, self.peer_id, row)
            if row["missing"]:
                log.warning("cross-site evaluation without the models of %s", row["missing"])
        write_atomic(self.out / cross_site.FILE, json.dumps(doc, indent=1).encode())
        if self.membership is not None and doc["digest"] is not None:
            self.membership.commit_evaluation(bytes.fromhex(doc["digest"]))

    def _members(self) -> tuple[str, ...]:
        """The members the run agreed at start (session.json), or without an agreement (the
        consortium's reference scaling) the keyring's; this node among them, sorted."""
        try:
            agreed = json.loads(self.session_path.read_text()).get("members", [])
        except (OSError, ValueError):
            agreed = []
        return tuple(sorted({*(agreed or self.keyring.members()), self.peer_id}))

    def _start(self, split: Split, scaler: Scaler, checkpoint: Checkpoint | None) -> RunState:
        """The model (initial, or resumed from the checkpoint) and what the rounds share."""
        cfg = self.cfg
        train_x, val_x = scaler.transform(split.train_x), scaler.transform(split.val_x)
        val_y, evaluated_on = split.val_y, "validation"
        test_x = test_y = None
        if cfg.data.test_path is not None:
            test_x, test_y = shared_test_set(cfg.data.test_path, cfg.data.schema_file, scaler)
            if not len(val_y):  # validation_fraction = 0 (the config needs test_path then)
                log.info("no validation split: evaluating and scoring on the common test set")
                val_x, val_y, evaluated_on = test_x, test_y, "test"
        model = build_model(cfg.model.name, train_x.shape[1], cfg.model.hidden, cfg.model.init_seed)
        initial = model_params(model)
        if checkpoint is None:
            save_params(self.out / "initial.safetensors", initial)
        else:
            load_params(model, checkpoint.params)  # the local part too: it is in the checkpoint
        local = local_names(model, cfg.swarm.personalize)
        published = shared_part(initial, local)  # what neighbours send and secure sums mask
        return RunState(
            model=model,
            train_x=train_x,
            train_y=split.train_y,
            val_x=val_x,
            val_y=val_y,
            initial=initial,
            current=initial if checkpoint is None else checkpoint.params,
            specs=wire.specs_of(published),
            size=size_of(published),
            train_settings=cfg.training.settings(),
            scorer=self._scorer(model, val_x, val_y),
            training=Offload(limiter=self.cpu),
            scoring=Offload(limiter=self.cpu),
            epoch_scores=dict(checkpoint.state.get("epoch_scores", {}) if checkpoint else {}),
            forger=np.random.default_rng(cfg.training.seed),
            resumed_from=None if checkpoint is None else checkpoint.round,
            privacy=self._private_training(len(split.train_y), checkpoint),
            test_x=test_x,
            test_y=test_y,
            evaluated_on=evaluated_on,
            local=local,
            screen_loss=(
                loss_meter(model, train_x, split.train_y, cfg.training.seed)
                if cfg.swarm.merge == "ubar"
                else None
            ),
        )

    def _private_training(
        self, n_train: int, checkpoint: Checkpoint | None
    ) -> PrivateTraining | None:
        """DP-SGD's plan for this run (the budget capped by the consortium's maximum) and its
        accountant, resumed from the checkpoint."""
        cfg = self.cfg
        if not cfg.privacy.dp:
            return None
        from node.privacy import PrivacyAccountant, plan_privacy

        section = cfg.privacy
        cap = self.membership.max_epsilon if self.membership is not None else None
        if cap is not None and (section.target_epsilon is None or section.target_epsilon > cap):
            log.warning("privacy: the consortium caps epsilon at %g: the budget is %g", cap, cap)
            section = section.model_copy(update={"target_epsilon": cap})
        t = cfg.training
        plan = plan_privacy(section, n_train, t.batch_size, t.epochs, cfg.swarm.rounds)
        state = checkpoint.state if checkpoint is not None else {}
        if "privacy" in state:
            accountant = PrivacyAccountant.from_state(state["privacy"])
        else:
            accountant = PrivacyAccountant.for_plan(plan)
        private = PrivateTraining(plan, accountant, state.get("retired_at"))
        if private.retired_at is not None:
            self._retire(private)
        return private

    def _retire(self, private: PrivateTraining) -> None:
        """The budget is spent: answer "gone" for new models, mask none for neighbours."""
        spent, budget = private.accountant.spent(), private.plan.budget
        why = f"privacy budget spent (epsilon {spent:.3g} of {budget})"
        log.warning("%s: no new models from round %s on; the neighbours carry on", why,
                    private.retired_at)  # fmt: skip
        self.exchange.store.retired.update({"params", MIX})
        if self.secagg is not None:
            self.secagg.retired = why

    async def _round(self, run: RunState, r: int) -> dict[str, Any]:
        """Round `r` as named steps: local update, publish transform, gather, score, combine,
        record. Returns the round's metrics record."""
        self.round = r
        began = time.perf_counter()
        self.exchange.counters.reset()
        if self.membership is not None:
            await trio.to_thread.run_sync(self.membership.refresh)
        previous = run.current
        trained = time.perf_counter()
        loss = await self._local_update(run, r, previous)
        train_seconds = time.perf_counter() - trained
        local_eval = (
            evaluate(run.model, run.val_x, run.val_y) if self.cfg.node.evaluate_local else None
        )
        updated = model_params(run.model)
        run.kept = local_part(updated, run.local)
        own = self.publish_transform(shared_part(updated, run.local))
        self._commit(r, own)
        partners = self._partners(r)
        mass = self._mass(partners)
        mixed: list[int] = []  # how many partners arrived in each extra mixing step
        if self.secagg is None:
            neighbours, failures = await self._gather(run, r, partners, own, mass)
            if self.cfg.adversary.mode in CRAFTED:  # what it crafts next round's model from
                run.received, run.received_base = neighbours, previous
            scores = await self._score(run, r, previous, own, neighbours)
            merged = self._combine(run, own, len(partners), mass, neighbours)
            reached = [n.peer for n in neighbours]
            merged = await self._mix(run, r, partners, merged, mass, mixed)
        else:
            merged, reached, failures, scores = await self._secure_round(
                run, r, partners, own, previous, mass
            )
        merged = joined(merged, run.kept, run.initial)  # the local part stays this node's own
        load_params(run.model, merged)
        run.current = merged
        merged_eval = evaluate(run.model, run.val_x, run.val_y)
        record = {
            "round": r,
            "time": time.time(),
            "node": self.cfg.node.name,
            "peer_id": self.peer_id,
            "train_loss": loss,
            "train_samples": self.samples,
            "local": local_eval.to_dict() if local_eval else None,
            "merged": merged_eval.to_dict(),
            "evaluated_on": run.evaluated_on,
            **self._test(run, merged_eval),
            "neighbours_reached": reached,
            "neighbours_total": len(partners),
            "mass": mass,
            "mixing_reached": mixed,
            "failures": failures,
            **self._traffic(),
            "train_seconds": train_seconds,
            "round_seconds": time.perf_counter() - began,
            "peak_rss_mb": peak_rss_mb(),
            "privacy": run.privacy.record() if run.privacy else None,
        }
        self._record(run, r, record, merged, scores)
        return record

    async def _local_update(self, run: RunState, r: int, previous: Params) -> float | None:
        """Train on the local rows; or, as a simulated `[adversary]`, forge and/or tamper with
        the update. Leaves the result in the model; returns the training loss (None: forged)."""
        adversary = self.cfg.adversary
        loss: float | None = None
        private = run.privacy
        if private is not None and not self._affords_round(private, r):
            return None  # no training: what it would publish would cost budget it has not
        if adversary.mode == "none":
            seed = training_seed(self.cfg.training.seed, r)
            args = (run.model, run.train_x, run.train_y, run.train_settings, seed)
            if private is None:
                loss = await run.training.run(train_local, *args)
            else:
                # The noise must be secret: unless simulating, it is drawn from the OS.
                from node.privacy import train_private

                secret = seed if self.cfg.privacy.seeded_noise else None
                loss = await run.training.run(train_private, *args[:4], private.plan, secret)
                private.accountant.record_round(private.plan)
        elif adversary.mode in CRAFTED:  # a simulated poisoner crafting from what it received
            load_params(run.model, await self._crafted(run, r, previous))
        else:  # a simulated free rider: publishes without training
            mode, std = adversary.mode, adversary.noise_std
            load_params(run.model, forged_params(mode, previous, run.initial, run.forger, std))
        if adversary.sign_flip or adversary.update_noise_std > 0:
            trained = model_params(run.model)
            flip, std = adversary.sign_flip, adversary.update_noise_std
            load_params(run.model, tamper_update(previous, trained, flip, std, run.forger))
        return loss

    async def _crafted(self, run: RunState, r: int, previous: Params) -> Params:
        """ALIE's or IPM's model from the neighbours' models of the last round as they arrived
        (in a colluding group: from the union of what its members received); with none, what
        it holds."""
        adversary = self.cfg.adversary
        received = [nb.params for nb in run.received]
        if adversary.group_dir is not None:
            received = await pooled(
                adversary.group_dir, r, self.peer_id, run.received, adversary.group_size,
                self.cfg.timeouts.fetch_seconds,
            )  # fmt: skip
        if not received:
            return previous
        if adversary.mode == "ipm":
            return ipm(previous, received, run.received_base, adversary.ipm_epsilon)
        # n: a victim's merge as the attacker sees it, the honest models and the attackers
        # (the same at every member of a group, whose union is the same).
        n = len(received) + adversary.group_size
        z = alie_z(n, adversary.alie_f) if adversary.alie_z is None else adversary.alie_z
        return alie(received, z)

    def _affords_round(self, private: PrivateTraining, r: int) -> bool:
        """Whether the budget pays for round `r`; the first time it does not, retire."""
        if private.retired_at is None and not private.accountant.can_afford(private.plan):
            private.retired_at = r
            self._retire(private)
        return private.retired_at is None

    async def _gather(
        self, run: RunState, r: int, partners: list[PeerInfo], own: Params, mass: int
    ) -> tuple[list[Neighbour], dict[str, str]]:
        """Publish `own` for round `r` and fetch the partners': (who arrived, why others not)."""
        swarm = self.cfg.swarm
        expect = wire.Expectation("params", r - swarm.max_staleness, swarm.rounds, run.specs)
        return await self._exchange_round("params", r, partners, own, mass, expect)

    async def _mix(
        self,
        run: RunState,
        r: int,
        partners: list[PeerInfo],
        merged: Params,
        mass: int,
        mixed: list[int],
    ) -> Params:
        """The round's extra mixing steps (swarm.gossip_steps - 1 of them): serve the merge,
        fetch the partners' and merge again, with the round's weights. Each step has its own
        id, r * gossip_steps + step, and takes only that step from a partner (no staleness:
        the same matrix at every step, applied to the same step's models). Appends how many
        arrived in each step to `mixed`; the others' failures are logged."""
        steps = self.cfg.swarm.gossip_steps
        for step in range(1, steps):
            ident = r * steps + step
            expect = wire.Expectation(MIX, ident, ident, run.specs)
            arrived, failures = await self._exchange_round(
                MIX, ident, partners, merged, mass, expect
            )
            for peer, why in failures.items():
                log.info("round %d, mixing step %d: no %s: %s", r, step, peer, why)
            merged = self._combine(run, merged, len(partners), mass, arrived)
            mixed.append(len(arrived))
        return merged

    def _mass(self, partners: list[PeerInfo]) -> int:
        """This node's closed-neighbourhood sample count for a round with `partners`: its own
        rows and every partner's, once it has heard from each (0 before, and under rules that
        do not read it). Dead partners still count: the mass bounds the weights, it is not a
        census of who answered."""
        if self.cfg.swarm.merge not in MASS_RULES:
            return 0
        counts = [self.peer_samples.get(info.peer_id.to_base58()) for info in partners]
        if any(n is None for n in counts):
            return 0
        return self.samples + sum(n for n in counts if n is not None)

    async def _score(
        self, run: RunState, r: int, previous: Params, own: Params, neighbours: list[Neighbour]
    ) -> RoundScores | None:
        """The neighbours' Shapley values this round, added to the epoch's (None: not scored)."""
        if run.scorer is None or not neighbours:
            return None
        if run.local:  # coalitions are scored as this node would use them: with its local part
            own = joined(own, run.kept, previous)
            neighbours = [
                dataclasses.replace(n, params=joined(n.params, run.kept, previous))
                for n in neighbours
            ]
        scores = await run.scoring.run(run.scorer.score, r, previous, own, neighbours)
        for peer, value in scores.scores.items():
            run.epoch_scores[peer] = run.epoch_scores.get(peer, 0.0) + value
        return scores

    async def _secure_round(
        self,
        run: RunState,
        r: int,
        partners: list[PeerInfo],
        own: Params,
        previous: Params,
        mass: int,
    ) -> tuple[Params, list[str], dict[str, str], RoundScores | None]:
        """Gather, score and combine under secure aggregation: the partners' models arrive
        only as their weighted sum. In scoring rounds the scorer sees the partners'
        DP-protected snapshots instead (docs/privacy.md). Returns (merged, who is in the sum,
        why others are not, scores)."""
        assert self.secagg is not None
        degree = max(len(partners), 1)
        if self.secagg.retired is None:
            await self.secagg.offer(r, flatten(own), self.samples, degree, mass)
        scores = None
        if self._scoring_round(r) and run.scorer is not None:
            snapshots, _ = await self._gather(run, r, partners, own, mass)
            scores = await self._score(run, r, previous, own, snapshots)
        reachable, failures = self._reachable(partners)
        t = self.cfg.timeouts
        result = await secure_agg.aggregate(
            self.exchange, self.peer_id, self.session, reachable, r, self.samples, len(partners),
            run.size, self.cfg.privacy.share_threshold, PAIR_WEIGHTS[self.cfg.swarm.merge],
            Deadlines(t.fetch_seconds, t.io_seconds, t.connect_seconds), mass,
        )  # fmt: skip
        self.peer_samples.update(result.samples)
        failures.update(result.failures)
        if result.total is None:
            return own, [], failures, scores
        total_weight = sum(result.weights.values())
        scale = neighbour_scale(self.samples, mass, total_weight)  # 1 unless a claim grew
        merged = merge_secure_sum(own, 1.0 - scale * total_weight, scale * result.total)
        return merged, sorted(result.weights), failures, scores

    def _scoring_round(self, r: int) -> bool:
        """Under secure aggregation, the rounds whose snapshots are scored: each epoch's last
        with the ledger, else every `contribution.snapshot_every` rounds and the last."""
        if self.membership is not None:
            return self._epoch_ends(r)
        return r % self.cfg.contribution.snapshot_every == 0 or r == self.cfg.swarm.rounds

    def _combine(
        self, run: RunState, own: Params, degree: int, mass: int, neighbours: list[Neighbour]
    ) -> Params:
        """The configured merge rule over `own` (with this round's degree and mass) and the
        arrivals."""
        swarm = self.cfg.swarm
        me = Neighbour(self.peer_id, own, self.samples, degree, mass)
        screen = run.screen_loss
        settings = MergeSettings(
            swarm.trim_fraction,
            swarm.byzantine,
            swarm.multi_krum_m,
            swarm.clip_radius,
            swarm.self_weight,
            # A neighbour's shared part is scored with this node's own local part beside it.
            None if screen is None else lambda p: screen(joined(p, run.kept, run.initial)),
        )
        return merging.merge(swarm.merge, me, neighbours, settings)

    def _record(
        self,
        run: RunState,
        r: int,
        record: dict[str, Any],
        merged: Params,
        scores: RoundScores | None,
    ) -> None:
        """Complete and append the metrics record, report an ended epoch, checkpoint `merged`."""
        if run.resumed_from is not None:
            record["resumed_from"] = run.resumed_from  # this process restarted the node
            run.resumed_from = None
        if scores is not None:
            record["contribution"] = scores.to_dict()
        if self.membership is not None:
            record["ledger_pending"] = self.membership.pending()
        append_record(self.metrics_path, record)
        if self._epoch_ends(r):
            self._report(r, run.epoch_scores, run.privacy)
            run.epoch_scores = {}
        state: dict[str, Any] = {"epoch_scores": run.epoch_scores}
        if run.privacy is not None:
            state["privacy"] = run.privacy.accountant.to_state()
            state["retired_at"] = run.privacy.retired_at
        save_checkpoint(self.out / "checkpoint", r, merged, state, self.cfg.node.fsync)
        self.on_round(record)

    def _test(self, run: RunState, merged: EvalResult) -> dict[str, Any]:
        """The merged model on the common test set, if the node has one: one forward pass
        (none when the test set is what `merged` was evaluated on already)."""
        if run.test_x is None or run.test_y is None:
            return {}
        if run.evaluated_on == "test":
            result = merged
        else:
            result = evaluate(run.model, run.test_x, run.test_y)
        return {"test": {"accuracy": result.accuracy, "auc": result.auc, "loss": result.loss}}

    def _traffic(self) -> dict[str, Any]:
        counters = self.exchange.counters
        return {
            "rejected_total": dict(counters.rejected),
            "refused_total": dict(counters.refused),
            "bytes_sent": counters.bytes_sent,
            "bytes_received": counters.bytes_received,
        }

    # -- contribution and the ledger ---------------------------------------------------------

    def _scorer(
        self, model: torch.nn.Module, val_x: np.ndarray, val_y: np.ndarray
    ) -> ContributionScorer | None:
        c = self.cfg.contribution
        if not (c.enabled or self.cfg.ledger.enabled):
            return None
        metric = c.metric
        if metric == "auc" and len(np.unique(val_y)) < 2:
            log.warning("evaluation rows have one class: scoring neighbours by loss, not AUC")
            metric = "loss"
        settings = ScoringSettings(
            metric=metric,
            exact_max_players=c.exact_max_players,
            budget=c.budget,
            truncation=c.truncation,
            seed=c.seed,
            replay_tolerance=c.replay_tolerance,
            duplicate_tolerance=c.duplicate_tolerance,
        )
        return ContributionScorer(settings, validation_value(model, val_x, val_y, metric))

    def _commit(self, round_: int, own: Params) -> None:
        """Keep this round's published model if asked, and queue its sha256 on chain."""
        if "params" in self.exchange.store.retired:
            return  # it publishes nothing new: nothing to keep or commit
        if self.membership is None and not self.cfg.node.keep_models:
            return
        data = params_bytes(own)
        if self.cfg.node.keep_models:  # the files an auditor checks against the commitments
            (self.out / "models").mkdir(exist_ok=True)
            path = self.out / "models" / f"round-{round_}.safetensors"
            write_atomic(path, data, self.cfg.node.fsync)
        if self.membership is not None:
            self.membership.commit(round_, hashlib.sha256(data).digest(), self.samples)

    def _epoch_ends(self, round_: int) -> bool:
        if self.membership is None:
            return False
        last = round_ == self.cfg.swarm.rounds
        return last or self.membership.epoch_of(round_ + 1) != self.membership.epoch_of(round_)

    def _report(
        self, round_: int, epoch_scores: dict[str, float], private: PrivateTraining | None
    ) -> None:
        """An epoch's score per neighbour (the sum of its per-round Shapley values) and the
        privacy budget spent so far (none: trained without DP-SGD), every epoch."""
        if self.membership is None:
            return
        epsilon, delta = (None, None) if private is None else (
            private.accountant.spent(), private.plan.delta
        )  # fmt: skip
        self.membership.report(self.membership.epoch_of(round_), epoch_scores, epsilon, delta)

    def _partners(self, round_: int) -> list[PeerInfo]:
        """The neighbours this node gossips with in `round_`: all of them, or with a rotation
        the ones whose phase is due (both ends of a link share its phase, so the weights stay
        symmetric and the sample-weighted average is kept)."""
        rotation = self.cfg.swarm.rotation
        if rotation == 1:
            return self.neighbours
        phases = self.cfg.node.neighbour_phases
        return [n for n, p in zip(self.neighbours, phases, strict=True) if round_ % rotation == p]

    async def _exchange_round(
        self,
        kind: str,
        round_: int,
        partners: list[PeerInfo],
        own: Params,
        mass: int,
        expect: wire.Expectation,
    ) -> tuple[list[Neighbour], dict[str, str]]:
        """Serve our snapshot for the round and fetch the partners' concurrently; learn each
        arrival's sample count (for the mass of later rounds)."""
        if kind == "params" and self.cfg.faults.publish_delay_seconds:
            await trio.sleep(self.cfg.faults.publish_delay_seconds)  # a simulated slow node
        if kind not in self.exchange.store.retired:
            await self.exchange.store.publish(
                wire.Snapshot(
                    kind, round_, self.peer_id, self.samples, max(len(partners), 1), own, mass
                )
            )
        arrivals: list[Neighbour] = []
        reachable, failures = self._reachable(partners)
        timeouts = self.cfg.timeouts

        async def fetch_one(info: PeerInfo) -> None:
            peer = info.peer_id.to_base58()
            try:
                header, tensors = await self.exchange.fetch(
                    info, round_, expect, timeouts.fetch_seconds, timeouts.connect_seconds
                )
                arrivals.append(
                    Neighbour(peer, tensors, header.samples, header.degree, header.mass)
                )
                self.peer_samples[peer] = header.samples
            except PeerMessageError as exc:
                log.warning("round %d: dropped message: %s", round_, exc)
                failures[peer] = f"rejected ({exc.rule}): {exc.detail}"
            except PeerUnavailable as exc:
                failures[peer] = exc.reason

        async with trio.open_nursery() as nursery:
            for info in reachable:
                nursery.start_soon(fetch_one, info)
        arrivals.sort(key=lambda a: a.peer)  # merge order independent of arrival timing
        return arrivals, failures

    def _reachable(self, partners: list[PeerInfo]) -> tuple[list[PeerInfo], dict[str, str]]:
        """The partners this node may exchange with this round, and why not the others."""
        reachable, failures = [], {}
        for info in partners:
            peer = info.peer_id.to_base58()
            if not self._link_up(peer):
                failures[peer] = "unreachable (simulated partition)"
            elif self._is_member(peer):
                reachable.append(info)
            else:
                failures[peer] = "not an active member on the ledger"
        return reachable, failures

    async def _linger(self) -> None:
        """Keep serving the final round until every partner took it (and, after a cross-site
        evaluation, until no member asks anything for a moment), or the linger time ends."""
        final, steps = self.cfg.swarm.rounds, self.cfg.swarm.gossip_steps
        # Only partners that may ask: a peer this node refuses, or every peer once this node is
        # no longer a member (they refuse it), never takes the final round.
        wanted = {info.peer_id.to_base58() for info in self._partners(final)}
        wanted = {p for p in wanted if self._allows(p)} if self._allows(self.peer_id) else set()
        served = self.exchange.counters.served if self.secagg is None else self.secagg.served
        if steps > 1:  # the last mixing step is what partners ask for last
            served, final = self.exchange.counters.served_of(MIX), final * steps + steps - 1
        with trio.move_on_after(self.cfg.timeouts.linger_seconds):
            while any(served.get(p, -1) < final for p in wanted):
                await trio.sleep(0.1)
            if self.cfg.evaluation.cross_site:
                # Members may still be relaying the final models through this node: serve until
                # nobody has asked anything for the grace time.
                await self._linger_quiet()
            else:
                # Sent is not yet read: on a loaded machine a partner may still be reading (or
                # retrying) the last answer, which closing the host now would cut off.
                await trio.sleep(LINGER_GRACE_SECONDS)
            # Under secure aggregation a partner that has our masked model may still ask for
            # seeds or shares: done once none has asked anything for a moment.
            while self.secagg and trio.current_time() - self.secagg.last_request < QUIET_SECONDS:
                await trio.sleep(0.1)

    # -- metrics file -----------------------------------------------------------------------

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def analytics_path(self) -> Path:
        return self.out / "analytics.json"

    @property
    def analytics_progress_path(self) -> Path:
        """One record per secure sum of the query in progress (as metrics.jsonl per round)."""
        return self.out / ANALYTICS_PROGRESS

    @property
    def scaler_path(self) -> Path:
        return self.out / "scaler.json"

    @property
    def session_path(self) -> Path:
        return self.out / "session.json"

    def _saved_session(self) -> str:
        try:
            return str(json.loads(self.session_path.read_text())["session"])
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{self.session_path}: cannot resume without it: {exc}") from None

    def _reference_scaler(self, path: Path, split: Split) -> Scaler:
        try:
            scaler = Scaler.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} (data.scaling): {exc}") from None
        if scaler.n_features != split.train_x.shape[1]:
            raise ConfigError(
                f"{path} (data.scaling): {scaler.n_features} columns, but the schema gives the "
                f"model {split.train_x.shape[1]} input columns"
            )
        return scaler

    def _saved_scaler(self) -> Scaler:
        try:
            return Scaler.from_dict(json.loads(self.scaler_path.read_text()))
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{self.scaler_path}: cannot resume without it: {exc}") from exc

    def _truncate_metrics(self, last_round: int) -> None:
        """Drop records newer than the checkpoint: those rounds are about to be redone."""
        kept = [r for r in read_records(self.metrics_path) if r["round"] <= last_round]
        write_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode())
