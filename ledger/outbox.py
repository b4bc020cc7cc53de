"""A durable outbox of ledger writes: queued in SQLite, sent with retries, each landing once.

Enqueueing never touches the chain, so a node keeps training while the chain is down.
`flush()` sends what it can, in order, and returns at the first transport failure. Exactly
once comes from the contract: a write that already landed (sent before a crash, or before
an outage cut the receipt off) is rejected with a duplicate error (AlreadyCommitted,
AlreadyReported, EpochAlreadyFinalized), which the outbox records as done.

Consecutive commitments go out as one commitBatch, and commitments followed by the report
of an epoch as one commitAndReport: flushing once per epoch is the cheapest way to write.
The contract takes a commitment only for a round below its window's limit (the round that
would close the epoch after the first unfinalized one). A commitment past it is held back, not
sent: it waits, without blocking the writes behind it, until the window moves on. When it holds
one back, a flush first finalizes the first unfinalized epoch if the contract lets it (anyone
may), which is what moves the window. The contract waits for every active member's report of
the epoch (ReportsMissing) unless most members are held at the window's end too, and takes a
report of an epoch finalized meanwhile as a late one (logged, not combined; its privacy spend
kept): a slow member's report is never refused, and the node only warns about it.

A cross-site evaluation's digest (commitEvaluation) goes alone; the contract refuses the
digest a member committed last (AlreadyEvaluated), which makes it exactly once too.

Thread-safety: one Outbox may be shared by threads (e.g. trio's worker thread flushing and
the event loop enqueueing); database access is serialised and only one flush runs at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ledger.contract import Ledger
from ledger.errors import ChainUnavailable, LedgerError, LedgerRevert, OutboxError
from ledger.privacy import NO_PRIVACY, delta_to_fixed, epsilon_to_fixed
from ledger.scores import to_fixed
from ledger.tx import TxResult
from ledger.views import Commitment

log = logging.getLogger(__name__)

Kind = Literal["commit", "report", "finalize", "withdraw", "evaluation"]
Status = Literal["pending", "done", "failed"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS writes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL
        CHECK (kind IN ('commit', 'report', 'finalize', 'withdraw', 'evaluation')),
    args TEXT NOT NULL,
    dedup_key TEXT UNIQUE,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    outcome TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    tx_hash TEXT,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS writes_status ON writes (status, id);
"""
# The table's columns, for copying the rows of an older file's table (see _upgrade).
COLUMNS = (
    "id, kind, args, dedup_key, status, outcome, attempts, tx_hash, last_error, created_at,"
    " updated_at"
)
# Reverts that mean "try again later", not "this write can never land".
RETRY_LATER = frozenset({"EpochNotClosed", "ReportsMissing", "RoundBeyondWindow"})


@dataclass(frozen=True)
class OutboxItem:
    id: int
    kind: Kind
    args: dict[str, Any]
    status: Status
    outcome: str | None  # 'sent', 'duplicate' or 'nothing' once done
    attempts: int
    tx_hash: str | None
    last_error: str | None


@dataclass
class FlushReport:
    sent: int = 0  # items that landed with this flush
    duplicates: int = 0  # items the chain already had (done)
    failed: int = 0  # items rejected for good (see last_error)
    pending: int = 0  # still queued after this flush
    chain_down: bool = False
    error: str | None = None
    tx_hashes: list[str] = field(default_factory=list)


class Outbox:
    def __init__(
        self, path: Path | str, ledger: Ledger | None = None, *, max_batch: int = 64
    ) -> None:
        self.path = Path(path)
        self.ledger = ledger
        self.max_batch = max_batch
        self._db_lock = threading.RLock()
        self._flush_lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a queued write survives power loss
            self._upgrade()
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: {exc}") from exc

    def _upgrade(self) -> None:
        """An outbox file from before evaluations: its table's CHECK refuses the kind, and
        SQLite cannot alter a CHECK, so the table is rebuilt with its rows (queued writes kept)."""
        row = self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'writes'"
        ).fetchone()
        if row is None or "'evaluation'" in row[0]:
            return
        try:
            self._db.executescript(
                "BEGIN IMMEDIATE; ALTER TABLE writes RENAME TO writes_old;"
                " DROP INDEX IF EXISTS writes_status;"
                f" {SCHEMA} INSERT INTO writes ({COLUMNS}) SELECT {COLUMNS} FROM writes_old;"
                " DROP TABLE writes_old; COMMIT;"
            )
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._db_lock:
            self._db.close()

    # ----- enqueue (never touches the chain) ------------------------------------------------

    def enqueue_commit(self, round: int, digest: bytes, samples: int) -> int:
        if len(digest) != 32:
            raise OutboxError(f"digest must be 32 bytes (sha256), got {len(digest)}")
        args = {"round": round, "digest": digest.hex(), "samples": samples}
        return self._enqueue("commit", args, f"commit:{round}")

    def enqueue_report(
        self,
        epoch: int,
        scores: Mapping[str, float],
        epsilon: float | None = None,
        delta: float | None = None,
    ) -> int:
        """Scores keyed by peer ID or address, as floats (possibly none), and this member's
        cumulative privacy spend (epsilon None: no DP); all stored as fixed point, so a value
        the chain cannot take fails here rather than in the worker."""
        args = {
            "epoch": epoch,
            "scores": {key: to_fixed(value) for key, value in scores.items()},
            "epsilon": epsilon_to_fixed(epsilon),
            "delta": delta_to_fixed(delta),
        }
        return self._enqueue("report", args, f"report:{epoch}")

    def enqueue_evaluation(self, digest: bytes) -> int:
        """The digest of this member's cross-site evaluation row; once per digest."""
        if len(digest) != 32:
            raise OutboxError(f"digest must be 32 bytes (sha256), got {len(digest)}")
        return self._enqueue("evaluation", {"digest": digest.hex()}, f"evaluation:{digest.hex()}")

    def enqueue_finalize(self, epoch: int) -> int:
        return self._enqueue("finalize", {"epoch": epoch}, f"finalize:{epoch}")

    def enqueue_withdraw(self) -> int:
        return self._enqueue("withdraw", {}, None)

    def _enqueue(self, kind: Kind, args: dict[str, Any], dedup_key: str | None) -> int:
        """Insert once: enqueueing the same round/epoch again (a restarted node) is a no-op."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO writes (kind, args, dedup_key, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (kind, json.dumps(args, sort_keys=True), dedup_key, now, now),
            )
            if cur.rowcount == 1:
                return int(cur.lastrowid or 0)
            row = db.execute("SELECT id FROM writes WHERE dedup_key = ?", (dedup_key,)).fetchone()
            return int(row[0])

    # ----- inspection ---------------------------------------------------------------------

    def items(self, status: Status | None = None) -> list[OutboxItem]:
        query = "SELECT id, kind, args, status, outcome, attempts, tx_hash, last_error FROM writes"
        params: tuple[Any, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            params = (status,)
        with self._db_lock:
            rows = self._db.execute(query + " ORDER BY id", params).fetchall()
        return [
            OutboxItem(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows
        ]

    def pending_count(self) -> int:
        with self._db_lock:
            row = self._db.execute("SELECT COUNT(*) FROM writes WHERE status = 'pending'")
            return int(row.fetchone()[0])

    def retry_failed(self) -> int:
        """Put failed items back in the queue (e.g. after an admin reactivated the member)."""
        with self._tx() as db:
            return db.execute(
                "UPDATE writes SET status = 'pending', updated_at = ? WHERE status = 'failed'",
                (time.time(),),
            ).rowcount

    # ----- sending ------------------------------------------------------------------------

    def flush(self, max_items: int | None = None) -> FlushReport:
        """Send queued writes in order until done, a transport failure, or `max_items`.

        Returns at once (nothing sent) if another thread is flushing."""
        report = FlushReport()
        if self.ledger is None:
            raise OutboxError("no ledger attached: pass one to Outbox(...) or set .ledger")
        if not self._flush_lock.acquire(blocking=False):
            report.pending = self.pending_count()
            return report
        try:
            budget = max_items if max_items is not None else 1 << 62
            deferred: set[int] = set()  # retry-later items: skipped until the next flush
            try:
                deferred |= self._held_commits()
            except ChainUnavailable as exc:
                self._note_attempt(self._next_group(budget, deferred), str(exc))
                report.chain_down = True
                report.error = str(exc)
                budget = 0
            while budget > 0:
                group = self._next_group(budget, deferred)
                if not group:
                    break
                try:
                    self._send_group(group, report, deferred)
                except ChainUnavailable as exc:
                    self._note_attempt(group, str(exc))
                    report.chain_down = True
                    report.error = str(exc)
                    break
                budget -= len(group)
        finally:
            self._flush_lock.release()
        report.pending = self.pending_count()
        return report

    def run(
        self,
        stop: threading.Event,
        interval: float = 1.0,
        max_backoff: float = 30.0,
        on_flush: Callable[[FlushReport], None] | None = None,
    ) -> None:
        """Flush every `interval` seconds until `stop` is set, backing off while the chain is
        down. Meant for a worker thread (see start_worker)."""
        delay = interval
        while not stop.is_set():
            result = self.flush()
            if on_flush is not None:
                on_flush(result)
            delay = min(delay * 2, max_backoff) if result.chain_down else interval
            stop.wait(delay)

    def start_worker(self, interval: float = 1.0) -> tuple[threading.Thread, threading.Event]:
        """A daemon thread running `run`; set the returned event (and join) to stop it."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self.run, args=(stop, interval), name="ledger-outbox", daemon=True
        )
        thread.start()
        return thread, stop

    def _held_commits(self) -> set[int]:
        """The pending commitments the contract would refuse for now (round at or past its
        window's limit), after finalizing the first unfinalized epoch if any are and it can."""
        ledger = self.ledger
        assert ledger is not None
        commits = [i for i in self.items("pending") if i.kind == "commit"]
        limit = ledger.round_limit()
        if not any(int(i.args["round"]) >= limit for i in commits):
            return set()
        # The window moves when the first unfinalized epoch is finalized; a revert means it is
        # not closed yet, a member's report is still awaited, or another member finalized it.
        with contextlib.suppress(LedgerRevert):
            ledger.finalize(ledger.state().next_epoch)
        limit = ledger.round_limit()
        return {i.id for i in commits if int(i.args["round"]) >= limit}

    def _next_group(self, budget: int, deferred: set[int]) -> list[OutboxItem]:
        """The next transaction's items: a run of commits (optionally closed by a report),
        or one other write."""
        pending = [i for i in self.items("pending") if i.id not in deferred]
        pending = pending[: min(budget, self.max_batch + 1)]
        if not pending:
            return []
        if pending[0].kind != "commit":
            return pending[:1]
        group: list[OutboxItem] = []
        for item in pending:
            if item.kind == "commit" and len(group) < self.max_batch:
                group.append(item)
                continue
            if item.kind == "report":
                group.append(item)
            break
        return group

    def _send_group(self, group: list[OutboxItem], report: FlushReport, deferred: set[int]) -> None:
        """Send `group`, peeling off duplicates and isolating a failing item."""
        while group:
            try:
                result = self._send(group)
            except LedgerRevert as exc:
                dup = self._duplicate_in(group, exc)
                if dup is not None:
                    self._mark(dup, "done", "duplicate", None, exc)
                    report.duplicates += 1
                    group = [item for item in group if item.id != dup.id]
                    continue
                if len(group) > 1:  # isolate which item the chain refuses
                    for item in group:
                        self._send_group([item], report, deferred)
                    return
                if exc.error_name in RETRY_LATER:
                    self._note_attempt(group, str(exc))
                    deferred.add(group[0].id)
                    return
                if group[0].kind == "withdraw" and exc.error_name == "NothingToWithdraw":
                    self._mark(group[0], "done", "nothing", None, exc)
                    return
                self._mark(group[0], "failed", None, None, exc)
                report.failed += 1
                return
            except ChainUnavailable:
                raise
            except LedgerError as exc:  # e.g. a scored peer that is not a member
                for item in group:
                    self._mark(item, "failed", None, None, exc)
                report.failed += len(group)
                return
            for item in group:
                self._mark(item, "done", "sent", result.tx_hash, None)
            report.sent += len(group)
            report.tx_hashes.append(result.tx_hash)
            return

    def _send(self, group: list[OutboxItem]) -> TxResult:
        ledger = self.ledger
        assert ledger is not None
        commits = [_commitment(i.args) for i in group if i.kind == "commit"]
        last = group[-1]
        if last.kind == "report":
            args = last.args
            scores = {ledger.index_of(k): int(v) for k, v in args["scores"].items()}
            # Rows queued before reports carried privacy have no keys: they were no-DP.
            privacy = (int(args.get("epsilon", NO_PRIVACY)), int(args.get("delta", 0)))
            if ledger.state().next_epoch > args["epoch"]:
                log.warning(
                    "epoch %d was finalized before this node's report of it: the report goes "
                    "out late (its scores are logged, not combined; its privacy spend counts)",
                    args["epoch"],
                )
            if commits:
                return ledger.commit_and_report(commits, args["epoch"], scores, *privacy)
            return ledger.report_fixed(args["epoch"], scores, *privacy)
        if last.kind == "finalize":
            return ledger.finalize(last.args["epoch"])
        if last.kind == "withdraw":
            return ledger.withdraw()
        if last.kind == "evaluation":
            return ledger.commit_evaluation(bytes.fromhex(last.args["digest"]))
        if len(commits) == 1:
            c = commits[0]
            return ledger.commit(c.round, c.digest, c.samples)
        return ledger.commit_batch(commits)

    @staticmethod
    def _duplicate_in(group: list[OutboxItem], exc: LedgerRevert) -> OutboxItem | None:
        """The item the chain says it already has, if this revert is such a rejection."""
        key = {
            "AlreadyCommitted": ("commit", "round"),
            "AlreadyReported": ("report", "epoch"),
            "EpochAlreadyFinalized": ("finalize", "epoch"),
            "AlreadyEvaluated": ("evaluation", "digest"),
        }.get(exc.error_name)
        if key is None:
            return None
        kind, field_name = key
        value = exc.arguments.get(field_name)
        if isinstance(value, bytes):  # a digest: the outbox keeps it as hex
            value = value.hex()
        return next((i for i in group if i.kind == kind and i.args[field_name] == value), None)

    def _mark(
        self,
        item: OutboxItem,
        status: Status,
        outcome: str | None,
        tx_hash: str | None,
        error: BaseException | None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE writes SET status = ?, outcome = ?, tx_hash = COALESCE(?, tx_hash),"
                " last_error = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (status, outcome, tx_hash, str(error) if error else None, time.time(), item.id),
            )

    def _note_attempt(self, group: list[OutboxItem], error: str) -> None:
        with self._tx() as db:
            db.executemany(
                "UPDATE writes SET attempts = attempts + 1, last_error = ?, updated_at = ?"
                " WHERE id = ?",
                [(error, time.time(), item.id) for item in group],
            )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db_lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise


def _commitment(args: dict[str, Any]) -> Commitment:
    return Commitment(int(args["round"]), bytes.fromhex(args["digest"]), int(args["samples"]))
