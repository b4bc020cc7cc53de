"""Typed read views of the contract (frozen: they are snapshots)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Commitment:
    round: int
    digest: bytes  # sha256 of the model file
    samples: int


@dataclass(frozen=True)
class MemberInfo:
    address: str
    index: int
    active: bool
    peer_id: str
    next_round: int  # 1 + highest committed round; 0: none yet
    next_epoch: int  # 1 + last reported epoch; 0: none yet
    owed: int  # wei accrued, not withdrawn
    paid: int  # wei withdrawn so far
    x25519_key: bytes | None  # its X25519 public key (32 bytes) for secure aggregation; None: none


@dataclass(frozen=True)
class LedgerState:
    address: str
    member_count: int
    max_members: int
    admin_count: int
    next_epoch: int  # first epoch not yet finalized
    reward_per_epoch: int
    pool: int  # balance - total owed: what future epochs can hand out
    total_owed: int
    balance: int
    rounds_per_epoch: int
    grace_rounds: int
    min_reports: int
    deployed_at: int
    max_epsilon: float | None  # the consortium's privacy budget per member; None: no maximum


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    finalized: bool
    reports_hash: bytes
    results_hash: bytes
    reward: int
    allocated: int


@dataclass(frozen=True)
class Report:
    """One ScoresReported event: who reported what, in the packed encoding."""

    epoch: int
    reporter: str
    entries: bytes
    block_number: int
    log_index: int


@dataclass(frozen=True)
class PrivacySpend:
    """One PrivacySpent event: a member's cumulative privacy spend, reported with `epoch`."""

    epoch: int
    member: str
    epsilon: int  # micro-epsilon (ledger.privacy); NO_PRIVACY: trains without DP
    delta: int  # units of 1e-18
    block: int
    tx_hash: str


@dataclass(frozen=True)
class Evaluation:
    """One EvaluationCommitted event: the digest of a member's cross-site evaluation row."""

    member: str
    digest: bytes  # sha256 of the row's canonical JSON (node.cross_site)
    block: int
    tx_hash: str
