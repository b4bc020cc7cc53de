"""Rebuild the consortium's whole state from the contract's events, recompute every median
and reward split, and check all of it against the contract's views and balance.

The audit trusts nothing but the logs and the rules: membership and admins, commitment
bitmaps, report hashes, combined scores, shares, owed and paid amounts, the pool, the
conservation of wei (funded = owed + paid + pool), X25519 keys, each member's latest cross-site
evaluation digest and the maximum epsilon. It also
checks each member's reported privacy spend: never above the consortium's maximum in force when
it was reported, never decreasing. `check_models` compares model files with the committed
digests. Every disagreement becomes a Finding; no findings means it matches. `write_audit`
writes a report as audit.json and CSV files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from eth_utils import keccak, to_checksum_address

from ledger.commitments import commitments_in, decode_commitments, round_range
from ledger.contract import Ledger, privacy_spend
from ledger.errors import AuditError
from ledger.events import Event, read_events
from ledger.privacy import (
    decimal_delta,
    decimal_epsilon,
    epsilon_from_fixed,
    exceeds,
    format_epsilon,
)
from ledger.scores import decode_entries, median, split_reward
from ledger.tx import transport_guard
from ledger.views import Evaluation, PrivacySpend

MODEL_FILE_RE = re.compile(r"^round-(\d+)\.safetensors$")


@dataclass(frozen=True)
class Finding:
    check: str  # which check failed, e.g. "member.owed"
    subject: str  # what it is about (address, epoch, file)
    expected: str  # what the events (or files) say
    actual: str  # what the contract says


@dataclass
class MemberRecord:
    address: str
    index: int
    peer_id: str
    name: str
    active: bool
    commitments: int = 0
    next_round: int = 0
    reports: int = 0
    next_epoch: int = 0
    accrued: int = 0
    paid: int = 0
    x25519_key: str | None = None  # 0x-hex public key; None: none registered
    evaluation: str | None = None  # 0x-hex digest of its latest cross-site evaluation row
    evaluations: int = 0  # how many it committed
    # Where its name, peer ID and active flag come from: its latest MemberRegistered event and,
    # when it is inactive, the MemberDeactivated event after it (0 and "": none).
    registered_block: int = 0
    registered_tx: str = ""
    deactivated_block: int = 0
    deactivated_tx: str = ""

    @property
    def owed(self) -> int:
        return self.accrued - self.paid


@dataclass(frozen=True)
class CommitRecord:
    round: int
    member: str
    digest: str
    samples: int
    block: int
    tx_hash: str


@dataclass(frozen=True)
class ScoreRecord:
    """A combined score and its reward: ScoreCombined and RewardAccrued, logged by the
    finalizing transaction (`block`, `tx_hash`)."""

    epoch: int
    member: str
    score: int  # fixed point (score * 1e6)
    reports: int
    reward: int
    block: int = 0
    tx_hash: str = ""


@dataclass(frozen=True)
class EpochRecord:
    """A finalized epoch (EpochFinalized) or one an admin closed (EpochClosedByAdmin)."""

    epoch: int
    status: str  # "finalized" or "closed by admin"
    reward: int  # wei the epoch could hand out
    allocated: int  # wei it handed out
    results_hash: str  # 0x-hex
    by: str
    block: int
    tx_hash: str


@dataclass(frozen=True)
class Withdrawal:
    """A member's withdrawal (RewardWithdrawn)."""

    member: str
    amount: int
    block: int
    tx_hash: str


@dataclass(frozen=True)
class Funding:
    """Wei paid into the pool (PoolFunded)."""

    source: str
    amount: int
    block: int
    tx_hash: str


@dataclass(frozen=True)
class MaxEpsilonRecord:
    max_epsilon: int  # micro-epsilon; 0: no maximum
    by: str
    block: int
    tx_hash: str


@dataclass(frozen=True)
class AdminClose:
    """A stalled epoch an admin closed (EpochClosedByAdmin): no scores, no reward."""

    epoch: int
    by: str
    block: int
    tx_hash: str


@dataclass(frozen=True)
class LateReport:
    """A report of an epoch already finalized (ScoresReportedLate): logged, never combined."""

    epoch: int
    member: str
    entries: str  # 0x-hex, the report encoding
    block: int
    tx_hash: str


@dataclass
class AuditReport:
    contract: str
    chain: str
    to_block: int
    events: int
    members: list[MemberRecord]
    commitments: list[CommitRecord]
    scores: list[ScoreRecord]
    epochs_finalized: int
    funded: int
    paid: int
    owed: int
    pool: int
    balance: int
    findings: list[Finding] = field(default_factory=list)
    models_checked: int = 0
    privacy: list[PrivacySpend] = field(default_factory=list)  # every report's, chain order
    max_epsilon: int = 0  # in force now (micro-epsilon; 0: no maximum)
    max_epsilon_history: list[MaxEpsilonRecord] = field(default_factory=list)
    # Members with a report above the maximum in force when they reported, by index.
    members_over_max: list[str] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)  # every digest, chain order
    epochs_closed_by_admin: list[AdminClose] = field(default_factory=list)
    late_reports: list[LateReport] = field(default_factory=list)
    epochs: list[EpochRecord] = field(default_factory=list)  # finalized or closed, in order
    withdrawals: list[Withdrawal] = field(default_factory=list)  # chain order
    fundings: list[Funding] = field(default_factory=list)  # chain order
    rounds_per_epoch: int = 1  # epoch e holds rounds e * rounds_per_epoch ... (e + 1) * ... - 1

    @property
    def ok(self) -> bool:
        return not self.findings

    def privacy_by_member(self) -> dict[str, list[PrivacySpend]]:
        """Each member's budget history, epochs ascending (members without reports: [])."""
        found: dict[str, list[PrivacySpend]] = {m.address: [] for m in self.members}
        for spend in self.privacy:
            found.setdefault(spend.member, []).append(spend)
        return found

    def commitments_per_round(self) -> dict[int, int]:
        counts: dict[int, int] = defaultdict(int)
        for c in self.commitments:
            counts[c.round] += 1
        return dict(sorted(counts.items()))


class _Replay:
    """Applies events in chain order, mirroring the contract's rules."""

    def __init__(self) -> None:
        self.admins: dict[str, bool] = {}
        self.members: dict[str, MemberRecord] = {}
        self.by_index: dict[int, str] = {}
        self.max_members = 0
        self.reward_per_epoch = 0
        self.funded = 0
        self.paid = 0
        self.owed_total = 0
        self.next_epoch = 0
        self.bits: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.commitments: dict[tuple[str, int], CommitRecord] = {}
        self.reports: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
        self.report_hash: dict[int, bytes] = defaultdict(lambda: b"\0" * 32)
        self.results: dict[int, tuple[bytes, int, int]] = {}
        self.scores: list[ScoreRecord] = []
        self.findings: list[Finding] = []
        self._combined: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)
        self._accrued: dict[int, dict[str, int]] = defaultdict(dict)
        self.rounds_per_epoch = 1
        self.grace_rounds = 0
        self.min_reports = 1
        self.max_epsilon = 0
        self.max_epsilon_history: list[MaxEpsilonRecord] = []
        self.privacy: list[PrivacySpend] = []
        self.over_max: set[str] = set()
        self._last_spend: dict[str, PrivacySpend] = {}
        self.evaluations: list[Evaluation] = []
        self.closed_by_admin: list[AdminClose] = []
        self.late_reports: list[LateReport] = []
        self.epochs: list[EpochRecord] = []
        self.withdrawals: list[Withdrawal] = []
        self.fundings: list[Funding] = []

    def apply(self, e: Event) -> None:
        handler = getattr(self, f"_on_{e.name}", None)
        if handler is not None:
            handler(e, e.args)

    def _find(self, check: str, subject: object, expected: object, actual: object) -> None:
        self.findings.append(Finding(check, str(subject), str(expected), str(actual)))

    def _on_AdminChanged(self, e: Event, a: dict[str, Any]) -> None:
        self.admins[a["account"]] = a["isAdmin"]

    def _on_MaxMembersChanged(self, e: Event, a: dict[str, Any]) -> None:
        self.max_members = a["maxMembers"]

    def _on_RewardPerEpochChanged(self, e: Event, a: dict[str, Any]) -> None:
        self.reward_per_epoch = a["amount"]

    def _on_MaxEpsilonChanged(self, e: Event, a: dict[str, Any]) -> None:
        self.max_epsilon = a["maxEpsilon"]
        self.max_epsilon_history.append(
            MaxEpsilonRecord(a["maxEpsilon"], a["by"], e.block_number, e.tx_hash)
        )

    def _on_X25519KeySet(self, e: Event, a: dict[str, Any]) -> None:
        key = bytes(a["key"])
        self.members[a["member"]].x25519_key = "0x" + key.hex() if any(key) else None

    def _on_PrivacySpent(self, e: Event, a: dict[str, Any]) -> None:
        """The maximum in force is the one replayed so far: events arrive in chain order."""
        spend = privacy_spend(e)
        self.privacy.append(spend)
        subject = f"{spend.member} epoch {spend.epoch}"
        if exceeds(spend.epsilon, self.max_epsilon):
            self.over_max.add(spend.member)
            expected = f"epsilon <= {format_epsilon(self.max_epsilon)}"
            self._find("privacy.max_epsilon", subject, expected, format_epsilon(spend.epsilon))
        last = self._last_spend.get(spend.member)
        if last is not None and spend.epsilon < last.epsilon:  # a cumulative spend only grows
            expected = f"epsilon >= {format_epsilon(last.epsilon)} (epoch {last.epoch})"
            self._find(
                "privacy.epsilon_decreased", subject, expected, format_epsilon(spend.epsilon)
            )
        self._last_spend[spend.member] = spend

    def _on_EvaluationCommitted(self, e: Event, a: dict[str, Any]) -> None:
        digest = bytes(a["digest"])
        self.evaluations.append(Evaluation(a["member"], digest, e.block_number, e.tx_hash))
        record = self.members[a["member"]]
        record.evaluation, record.evaluations = "0x" + digest.hex(), record.evaluations + 1

    def _on_MemberRegistered(self, e: Event, a: dict[str, Any]) -> None:
        address, index = a["member"], a["index"]
        record = self.members.get(address)
        if record is None:
            if index != len(self.by_index):
                self._find("event.index", address, len(self.by_index), index)
            record = MemberRecord(address, index, a["peerId"], a["name"], True)
            self.members[address] = record
            self.by_index[index] = address
        else:
            record.active, record.peer_id, record.name = True, a["peerId"], a["name"]
        record.registered_block, record.registered_tx = e.block_number, e.tx_hash
        record.deactivated_block, record.deactivated_tx = 0, ""

    def _on_MemberDeactivated(self, e: Event, a: dict[str, Any]) -> None:
        record = self.members[a["member"]]
        record.active = False
        record.deactivated_block, record.deactivated_tx = e.block_number, e.tx_hash

    def _on_ModelCommitted(self, e: Event, a: dict[str, Any]) -> None:
        """One commitment (`commit`); ModelsCommitted logs a whole batch."""
        for member, c in commitments_in(e):
            key = (member, c.round)
            if key in self.commitments:
                self._find("event.duplicate_commitment", f"{member} round {c.round}", 1, 2)
            self.commitments[key] = CommitRecord(
                c.round, member, "0x" + c.digest.hex(), c.samples, e.block_number, e.tx_hash
            )
            self.bits[member][c.round >> 8] |= 1 << (c.round & 0xFF)
            record = self.members[member]
            record.commitments += 1
            record.next_round = max(record.next_round, c.round + 1)

    def _on_ModelsCommitted(self, e: Event, a: dict[str, Any]) -> None:
        """A batch: its records, and its indexed round range against them."""
        records = decode_commitments(a["commitments"])
        if records:
            expected = round_range(records)
            logged = (a["firstRound"], a["lastRound"])
            if logged != expected:
                self._find("event.round_range", f"{a['member']} tx {e.tx_hash}", expected, logged)
        self._on_ModelCommitted(e, a)

    def _on_ScoresReported(self, e: Event, a: dict[str, Any]) -> None:
        epoch, reporter, entries = a["epoch"], a["reporter"], a["entries"]
        self.reports[epoch].append((reporter, entries))
        self.report_hash[epoch] = keccak(
            self.report_hash[epoch] + bytes.fromhex(reporter[2:]) + entries
        )
        record = self.members[reporter]
        record.reports += 1
        record.next_epoch = epoch + 1

    def _on_ScoresReportedLate(self, e: Event, a: dict[str, Any]) -> None:
        epoch, reporter = a["epoch"], a["reporter"]
        if epoch >= self.next_epoch:  # the contract logs only a finalized epoch's as late
            self._find("report.late", f"{reporter} epoch {epoch}", "a finalized epoch", epoch)
        self.members[reporter].next_epoch = epoch + 1
        entries = "0x" + bytes(a["entries"]).hex()
        self.late_reports.append(LateReport(epoch, reporter, entries, e.block_number, e.tx_hash))

    def _on_ScoreCombined(self, e: Event, a: dict[str, Any]) -> None:
        self._combined[a["epoch"]][a["member"]] = (a["score"], a["reports"])

    def _on_RewardAccrued(self, e: Event, a: dict[str, Any]) -> None:
        self._accrued[a["epoch"]][a["member"]] = a["amount"]
        self.members[a["member"]].accrued += a["amount"]
        self.owed_total += a["amount"]

    def _on_PoolFunded(self, e: Event, a: dict[str, Any]) -> None:
        self.funded += a["amount"]
        self.fundings.append(Funding(a["from"], a["amount"], e.block_number, e.tx_hash))

    def _on_RewardWithdrawn(self, e: Event, a: dict[str, Any]) -> None:
        self.withdrawals.append(Withdrawal(a["member"], a["amount"], e.block_number, e.tx_hash))
        self.members[a["member"]].paid += a["amount"]
        self.paid += a["amount"]
        self.owed_total -= a["amount"]

    def _on_EpochFinalized(self, e: Event, a: dict[str, Any]) -> None:
        """Recompute the epoch from the replayed reports and membership, compare with what the
        contract emitted. (Score and accrual events precede this one in the same tx.)"""
        epoch = a["epoch"]
        if epoch != self.next_epoch:
            self._find("event.epoch_order", f"epoch {epoch}", self.next_epoch, epoch)
        order = [self.by_index[i] for i in range(len(self.by_index))]
        active = {m for m in order if self.members[m].active}
        close_round = (epoch + 1) * self.rounds_per_epoch + self.grace_rounds
        past = sum(1 for m in active if self.members[m].next_round > close_round)
        if past * 2 <= len(active):
            self._find("finalize.closed", f"epoch {epoch}", f"> {len(active) / 2}", past)
        # Anyone but an admin waits for every active member's report, or the window's end.
        reported = sum(1 for m in active if self.members[m].next_epoch > epoch)
        window_end = close_round + self.rounds_per_epoch
        at_end = sum(1 for m in active if self.members[m].next_round >= window_end)
        if not self.admins.get(a["by"]) and reported < len(active) and at_end * 2 <= len(active):
            self._find("finalize.reports", f"epoch {epoch}", len(active), reported)
        buckets: dict[str, list[int]] = defaultdict(list)
        for reporter, entries in self.reports.get(epoch, []):
            if reporter not in active:
                continue
            for subject, score in decode_entries(entries).items():
                buckets[self.by_index[subject]].append(score)
        scored = [m for m in order if m in active and len(buckets[m]) >= max(self.min_reports, 1)]
        combined = {m: median(buckets[m]) for m in scored}
        # The pool this epoch could draw on, from replayed funding and accruals (the accruals
        # of this very epoch were already applied by their events: take them back out).
        this_epoch = sum(self._accrued[epoch].values())
        pool = self.funded - self.paid - (self.owed_total - this_epoch)
        reward = min(self.reward_per_epoch, pool)
        shares = dict(zip(scored, split_reward(reward, [combined[m] for m in scored]), strict=True))
        if reward != a["reward"]:
            self._find("finalize.reward", f"epoch {epoch}", reward, a["reward"])
        results = b"\0" * 32
        for m in scored:
            results = keccak(
                results
                + bytes.fromhex(m[2:])
                + combined[m].to_bytes(8, "big", signed=True)
                + len(buckets[m]).to_bytes(4, "big")
                + shares[m].to_bytes(16, "big")
            )
            emitted = self._combined[epoch].get(m)
            if emitted != (combined[m], len(buckets[m])):
                self._find(
                    "finalize.score", f"epoch {epoch} {m}", (combined[m], len(buckets[m])), emitted
                )
            if self._accrued[epoch].get(m, 0) != shares[m]:
                self._find(
                    "finalize.share", f"epoch {epoch} {m}", shares[m], self._accrued[epoch].get(m)
                )
            self.scores.append(
                ScoreRecord(
                    epoch, m, combined[m], len(buckets[m]), shares[m], e.block_number, e.tx_hash
                )
            )
        for m in set(self._combined[epoch]) - set(scored):
            self._find("finalize.score", f"epoch {epoch} {m}", "no score", self._combined[epoch][m])
        allocated = sum(shares.values())
        if allocated != a["allocated"] or allocated != this_epoch:
            self._find("finalize.allocated", f"epoch {epoch}", allocated, a["allocated"])
        if results != a["resultsHash"]:
            self._find("finalize.results_hash", f"epoch {epoch}", results.hex(), a["resultsHash"])
        self.results[epoch] = (results, reward, allocated)
        self.epochs.append(
            EpochRecord(
                epoch,
                "finalized",
                a["reward"],
                a["allocated"],
                "0x" + bytes(a["resultsHash"]).hex(),
                a["by"],
                e.block_number,
                e.tx_hash,
            )
        )
        self.next_epoch = epoch + 1

    def _on_EpochClosedByAdmin(self, e: Event, a: dict[str, Any]) -> None:
        """A stalled epoch closed by an admin: no scores, no reward (the contract checked the
        timeout; the audit lists every such close)."""
        epoch = a["epoch"]
        if epoch != self.next_epoch:
            self._find("event.epoch_order", f"epoch {epoch}", self.next_epoch, epoch)
        self.results[epoch] = (b"\0" * 32, 0, 0)
        self.closed_by_admin.append(AdminClose(epoch, a["by"], e.block_number, e.tx_hash))
        self.epochs.append(
            EpochRecord(
                epoch, "closed by admin", 0, 0, "0x" + "00" * 32, a["by"], e.block_number, e.tx_hash
            )
        )
        self.next_epoch = epoch + 1


def run_audit(ledger: Ledger, to_block: int | None = None, page: int = 5_000) -> AuditReport:
    """Replay every event up to `to_block` (default: latest) and check it against the views.
    AuditError when no contract is deployed at the address."""
    w3 = ledger.chain.w3
    code = transport_guard(ledger.chain.name, lambda: w3.eth.get_code(ledger.address))
    if not code:
        raise AuditError(f"no contract at {ledger.address} on this chain ({ledger.chain.name})")
    last = (
        to_block
        if to_block is not None
        else transport_guard(ledger.chain.name, lambda: w3.eth.block_number)
    )
    events = transport_guard(
        ledger.chain.name,
        lambda: read_events(w3, ledger.events, ledger.address, ledger.deployed_at, last, page=page),
    )
    state = ledger.state()
    replay = _Replay()
    replay.rounds_per_epoch = state.rounds_per_epoch
    replay.grace_rounds = state.grace_rounds
    replay.min_reports = state.min_reports
    for event in events:
        replay.apply(event)
    _check_views(ledger, replay, state)
    members = [replay.members[replay.by_index[i]] for i in range(len(replay.by_index))]
    commitments = sorted(replay.commitments.values(), key=lambda c: (c.round, c.member))
    return AuditReport(
        contract=ledger.address,
        chain=ledger.chain.name,
        to_block=last,
        events=len(events),
        members=members,
        commitments=commitments,
        scores=replay.scores,
        epochs_finalized=replay.next_epoch,
        funded=replay.funded,
        paid=replay.paid,
        owed=replay.owed_total,
        pool=state.pool,
        balance=state.balance,
        findings=replay.findings,
        privacy=replay.privacy,
        max_epsilon=replay.max_epsilon,
        max_epsilon_history=replay.max_epsilon_history,
        members_over_max=[m.address for m in members if m.address in replay.over_max],
        evaluations=replay.evaluations,
        epochs_closed_by_admin=replay.closed_by_admin,
        late_reports=replay.late_reports,
        epochs=replay.epochs,
        withdrawals=replay.withdrawals,
        fundings=replay.fundings,
        rounds_per_epoch=state.rounds_per_epoch,
    )


def _check_views(ledger: Ledger, r: _Replay, state: Any) -> None:
    def same(check: str, subject: object, expected: object, actual: object) -> None:
        if expected != actual:
            r.findings.append(Finding(check, str(subject), str(expected), str(actual)))

    same("state.member_count", "contract", len(r.by_index), state.member_count)
    same("state.max_members", "contract", r.max_members, state.max_members)
    same("state.admin_count", "contract", sum(r.admins.values()), state.admin_count)
    same("state.next_epoch", "contract", r.next_epoch, state.next_epoch)
    same("state.reward_per_epoch", "contract", r.reward_per_epoch, state.reward_per_epoch)
    max_epsilon = epsilon_from_fixed(r.max_epsilon) if r.max_epsilon else None
    same("state.max_epsilon", "contract", max_epsilon, state.max_epsilon)
    same("state.total_owed", "contract", r.owed_total, state.total_owed)
    same("wei.balance", "contract", r.funded - r.paid, state.balance)
    same("wei.pool", "contract", r.funded - r.paid - r.owed_total, state.pool)
    same("wei.conservation", "funded", r.funded, state.total_owed + r.paid + state.pool)
    for account, enabled in r.admins.items():
        same("admin", account, enabled, ledger.is_admin(account))
    for index, address in r.by_index.items():
        same("member.at", f"index {index}", address, ledger.member_address(index))
        rec = r.members[address]
        view = ledger.member(address)
        if view is None:
            same("member.known", address, True, False)
            continue
        same("member.index", address, rec.index, view.index)
        same("member.active", address, rec.active, view.active)
        same("member.peer_id", address, rec.peer_id, view.peer_id)
        same("member.next_round", address, rec.next_round, view.next_round)
        same("member.next_epoch", address, rec.next_epoch, view.next_epoch)
        same("member.owed", address, rec.owed, view.owed)
        same("member.paid", address, rec.paid, view.paid)
        key = "0x" + view.x25519_key.hex() if view.x25519_key is not None else None
        same("member.x25519_key", address, rec.x25519_key, key)
        evaluation = ledger.evaluation_of(address)
        same("member.evaluation", address, rec.evaluation, evaluation and "0x" + evaluation.hex())
        by_peer = ledger.member_by_peer_id(rec.peer_id)
        same("member.by_peer_id", rec.peer_id, address, by_peer.address if by_peer else None)
        for word in _bitmap_words(r.bits[address], rec.next_round, view.next_round):
            same(
                "commitments.bitmap",
                f"{address} rounds {word * 256}-{word * 256 + 255}",
                hex(r.bits[address].get(word, 0)),
                hex(ledger.committed_word(address, word)),
            )
    for epoch in sorted(set(r.reports) | set(range(state.next_epoch))):
        result = ledger.epoch_result(epoch, state.next_epoch)
        same(
            "reports.hash", f"epoch {epoch}", r.report_hash[epoch].hex(), result.reports_hash.hex()
        )
        if epoch in r.results:
            results, reward, allocated = r.results[epoch]
            same("epoch.results_hash", f"epoch {epoch}", results.hex(), result.results_hash.hex())
            same("epoch.reward", f"epoch {epoch}", reward, result.reward)
            same("epoch.allocated", f"epoch {epoch}", allocated, result.allocated)


def _bitmap_words(replayed: dict[int, int], *next_rounds: int) -> list[int]:
    """The bitmap words to compare for one member: every word its events set bits in, plus
    the word of its highest round by the events and by the contract (`nextRound - 1`). Not
    every word up to the highest round: one commitment of round 2**40 would make that ~4e9
    view calls. A bit the contract set without an event would only show in a word not read
    here if the contract logged nothing for it, which neither commit path can do."""
    words = set(replayed)
    words.update((n - 1) >> 8 for n in next_rounds if n > 0)
    return sorted(words)


def check_models(report: AuditReport, models_dir: Path) -> list[Finding]:
    """Compare DIR/<member>/round-<r>.safetensors with the digests committed on chain.

    <member> is the member's address (any case) or its libp2p peer ID. Every file must match
    a commitment; committed rounds without a file are not checked."""
    findings: list[Finding] = []
    by_key: dict[str, str] = {}
    for m in report.members:
        by_key[m.address.lower()] = m.address
        by_key[m.peer_id] = m.address
    digests = {(c.member, c.round): c.digest for c in report.commitments}
    checked = 0
    if not models_dir.is_dir():
        findings.append(Finding("models.dir", str(models_dir), "a directory", "missing"))
        return findings
    for member_dir in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        address = by_key.get(member_dir.name) or by_key.get(member_dir.name.lower())
        if address is None:
            findings.append(Finding("models.member", str(member_dir), "a member", "unknown"))
            continue
        for path in sorted(member_dir.iterdir()):
            match = MODEL_FILE_RE.match(path.name)
            if not match:
                findings.append(
                    Finding("models.name", str(path), "round-<r>.safetensors", path.name)
                )
                continue
            round_ = int(match.group(1))
            checked += 1
            actual = "0x" + _sha256(path)
            expected = digests.get((to_checksum_address(address), round_))
            if expected is None:
                findings.append(Finding("models.uncommitted", str(path), "a commitment", "none"))
            elif expected != actual:
                findings.append(Finding("models.digest", str(path), expected, actual))
    report.models_checked = checked
    report.findings.extend(findings)
    return findings


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


FINDING_FIELDS = ["check", "subject", "expected", "actual"]
PRIVACY_FIELDS = ["member", "name", "epoch", "epsilon", "delta", "block", "tx_hash"]
EVALUATION_FIELDS = ["member", "name", "digest", "block", "tx_hash"]
MEMBER_FIELDS = [f.name for f in fields(MemberRecord)] + ["owed"]
EPOCH_MEMBER_FIELDS = [
    "epoch", "status", "member", "name", "commitments", "score", "reports", "reward", "block",
    "tx_hash",
]  # fmt: skip
# The audit's tables: one CSV file each, and (but for commitments and privacy, whose rows
# audit.json keeps in its own form) one list of audit.json.
TABLE_FIELDS: dict[str, list[str]] = {
    "members": MEMBER_FIELDS,
    "epochs": [f.name for f in fields(EpochRecord)],
    "epoch_members": EPOCH_MEMBER_FIELDS,
    "commitments": [f.name for f in fields(CommitRecord)],
    "scores": [f.name for f in fields(ScoreRecord)],
    "withdrawals": [f.name for f in fields(Withdrawal)],
    "fundings": [f.name for f in fields(Funding)],
    "privacy": PRIVACY_FIELDS,
    "evaluations": EVALUATION_FIELDS,
    "findings": FINDING_FIELDS,
}


def epoch_members(report: AuditReport) -> list[dict[str, Any]]:
    """Every epoch with a commitment, a score or a close, and every member: its commitments in
    the epoch's rounds, its combined score (None: not scored), reports and reward, and the
    transaction that finalized or closed the epoch (block 0 and "": still open)."""
    per_epoch = report.rounds_per_epoch or 1
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for c in report.commitments:
        counts[(c.round // per_epoch, c.member)] += 1
    scores = {(s.epoch, s.member): s for s in report.scores}
    closed = {e.epoch: e for e in report.epochs}
    last = max([e for e, _ in counts] + [s.epoch for s in report.scores] + list(closed), default=-1)
    rows = []
    for epoch in range(last + 1):
        done = closed.get(epoch)
        for m in report.members:
            score = scores.get((epoch, m.address))
            rows.append(
                {
                    "epoch": epoch,
                    "status": done.status if done else "open",
                    "member": m.address,
                    "name": m.name,
                    "commitments": counts.get((epoch, m.address), 0),
                    "score": score.score if score else None,
                    "reports": score.reports if score else 0,
                    "reward": score.reward if score else 0,
                    "block": done.block if done else 0,
                    "tx_hash": done.tx_hash if done else "",
                }
            )
    return rows


def audit_document(report: AuditReport) -> dict[str, Any]:
    """audit.json's content, as JSON types: every field of the report (commitments as a count
    and a count per round; their records are in the commitments table), `ok`, each member's
    `owed`, and the per epoch and member rows (`epoch_members`)."""
    names = {m.address: m.name for m in report.members}
    evaluations = [
        {"member": v.member, "name": names.get(v.member, ""), "digest": "0x" + v.digest.hex(),
         "block": v.block, "tx_hash": v.tx_hash}
        for v in report.evaluations
    ]  # fmt: skip
    doc = {
        "ok": report.ok,
        **{k: v for k, v in asdict(report).items() if k not in ("commitments",)},
        "members": [asdict(m) | {"owed": m.owed} for m in report.members],
        "commitments_per_round": report.commitments_per_round(),
        "commitments": len(report.commitments),
        "evaluations": evaluations,
        "epoch_members": epoch_members(report),
    }
    parsed: dict[str, Any] = json.loads(json.dumps(doc, default=str))
    return parsed


def audit_tables(report: AuditReport, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each table's rows (TABLE_FIELDS) as its CSV file has them: audit.json's (`doc`, made
    when not given), but commitments (their records) and privacy (epsilon and delta as exact
    decimals, epsilon `inf` for no DP, and each member's name)."""
    doc = doc if doc is not None else audit_document(report)
    names = {m.address: m.name for m in report.members}
    tables: dict[str, Any] = {name: doc[name] for name in TABLE_FIELDS if name in doc}
    tables["commitments"] = [asdict(c) for c in report.commitments]
    tables["privacy"] = [
        {
            "member": p.member,
            "name": names.get(p.member, ""),
            "epoch": p.epoch,
            "epsilon": decimal_epsilon(p.epsilon),
            "delta": decimal_delta(p.delta),
            "block": p.block,
            "tx_hash": p.tx_hash,
        }
        for p in report.privacy
    ]
    return tables


def table_csv(name: str, rows: list[dict[str, Any]]) -> str:
    """One table as its CSV file's text (None as an empty cell)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=TABLE_FIELDS[name])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_audit(report: AuditReport, out_dir: Path) -> None:
    """audit.json and a CSV file per table (TABLE_FIELDS: members, epochs, epoch_members,
    commitments, scores, withdrawals, fundings, privacy, evaluations, findings) in `out_dir`.
    audit.json keeps epsilon and delta in the chain's fixed point; privacy.csv has them as
    exact decimals (epsilon `inf`: trains without differential privacy); digests are 0x-hex in
    both. The explorer serves the same (medswarm/web/explorer.py)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = audit_document(report)
    (out_dir / "audit.json").write_text(json.dumps(doc, indent=2) + "\n")
    for name, rows in audit_tables(report, doc).items():
        (out_dir / f"{name}.csv").write_text(table_csv(name, rows), newline="")
