"""The node's link to the consortium's chain: who may talk to us, and what we write.

At start the node checks that its Ethereum account is an active member registered with this
node's libp2p peer ID. Every round it re-reads the registry (so a deactivated member is dropped
within one round) and queues its commitment, each epoch its scores, and at the end the digest
of its cross-site evaluation, in a durable outbox that a worker thread sends; if the chain is
down the node trains on and the writes go out later.
"""

import logging
import time
from collections.abc import Mapping
from pathlib import Path

from eth_account.signers.local import LocalAccount

from ledger.accounts import load_key_env, load_key_file
from ledger.backends import connect
from ledger.contract import Ledger
from ledger.errors import LedgerError
from ledger.outbox import Outbox
from node.config import LedgerSection
from node.errors import NodeError


class MembershipError(NodeError):
    """This node may not take part: no key, not a member, inactive, or a different peer ID."""


def _account(section: LedgerSection) -> LocalAccount:
    if section.key_file is not None:
        return load_key_file(section.key_file)
    account = load_key_env()
    if account is None:
        raise MembershipError(
            "ledger.enabled needs an Ethereum key: set ledger.key_file or $MEDSWARM_ETH_KEY"
        )
    return account


class Membership:
    """Registry reads on one connection, the outbox worker on another (web3 is not shared
    across threads)."""

    def __init__(self, section: LedgerSection, peer_id: str, outbox_path: Path) -> None:
        self.section = section
        self.peer_id = peer_id
        try:
            account = _account(section)
            self._reader = Ledger(connect(section.chain), section.contract, account)
            me = self._reader.member(account.address)
        except LedgerError as exc:
            raise MembershipError(f"ledger at {section.chain}: {exc}") from exc
        if me is None or not me.active:
            state = "not registered" if me is None else "deactivated"
            raise MembershipError(
                f"account {account.address} is {state} in contract {section.contract}"
            )
        if me.peer_id != peer_id:
            raise MembershipError(
                f"account {account.address} is registered with peer ID {me.peer_id}, "
                f"but this node's identity is {peer_id}"
            )
        self.address = account.address
        self.rounds_per_epoch = self._reader.state().rounds_per_epoch
        self.active_peers: frozenset[str] = frozenset()
        self.x25519_keys: dict[str, bytes] = {}  # peer ID -> key, active members with one
        self.max_epsilon: float | None = None  # the consortium's privacy budget; None: none
        self.refresh()
        writer = Ledger(connect(section.chain), section.contract, account)
        self.outbox = Outbox(outbox_path, writer)
        self._worker, self._stop = self.outbox.start_worker(section.flush_seconds)

    def refresh(self) -> None:
        """Re-read the active members, their X25519 keys and the maximum epsilon; on a chain
        error keep the last known ones."""
        log = logging.getLogger(__name__)
        try:
            members = self._reader.members()
            max_epsilon = self._reader.state().max_epsilon
        except LedgerError as exc:
            log.warning("registry unreadable, keeping the last known members: %s", exc)
            return
        active = [m for m in members if m.active]
        self.active_peers = frozenset(m.peer_id for m in active)
        self.x25519_keys = {m.peer_id: m.x25519_key for m in active if m.x25519_key is not None}
        self.max_epsilon = max_epsilon

    def ensure_x25519_key(self, public: bytes) -> None:
        """Register this node's X25519 public key on chain unless it is there already (a new
        node, or a rotated key file): the other members find it in the registry. One
        transaction, sent at once (the secure sums need it before the first round)."""
        if self.x25519_keys.get(self.peer_id) == public:
            return
        try:
            self._reader.set_x25519_key(public)
        except LedgerError as exc:
            raise MembershipError(
                f"cannot register this node's X25519 key in contract {self.section.contract}: {exc}"
            ) from exc
        self.refresh()

    def allows(self, peer_id: str) -> bool:
        return peer_id in self.active_peers

    def epoch_of(self, round_: int) -> int:
        return round_ // self.rounds_per_epoch

    def commit(self, round_: int, digest: bytes, samples: int) -> None:
        self.outbox.enqueue_commit(round_, digest, samples)

    def report(
        self,
        epoch: int,
        scores: Mapping[str, float],
        epsilon: float | None = None,
        delta: float | None = None,
    ) -> None:
        """Queue the epoch's scores for the peers that are still members (possibly none) and
        this node's cumulative privacy spend (epsilon None: no differential privacy)."""
        known = {peer: s for peer, s in scores.items() if peer in self.active_peers}
        self.outbox.enqueue_report(epoch, known, epsilon, delta)

    def commit_evaluation(self, digest: bytes) -> None:
        """Queue the sha256 of this node's cross-site evaluation row."""
        self.outbox.enqueue_evaluation(digest)

    def pending(self) -> int:
        return self.outbox.pending_count()

    def close(self, drain_seconds: float) -> int:
        """Give the outbox up to `drain_seconds` to empty, stop the worker; return what is left
        (it stays queued on disk and goes out when the node next runs)."""
        deadline = time.monotonic() + drain_seconds
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.2)
        self._stop.set()
        self._worker.join(timeout=30)
        left = self.pending()
        self.outbox.close()
        return left
