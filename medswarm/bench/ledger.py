"""`medswarm bench ledger`: gas per write, sequential throughput and audit time, on Anvil."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table

from ledger.accounts import DEV_HD_PREFIX, DEV_MNEMONIC
from ledger.audit import run_audit
from ledger.backends import Chain, connect
from ledger.backends.anvil import connect_anvil
from ledger.contract import DeployConfig, Ledger
from ledger.privacy import delta_to_fixed, epsilon_to_fixed
from ledger.views import Commitment

ROUNDS_PER_EPOCH = 10
SCORE = 1_000_000
DELTA = delta_to_fixed(1e-5)


def _spend(epoch: int) -> tuple[int, int]:
    """A DP member's report of `epoch`: cumulative epsilon (0.5 an epoch) and delta."""
    return epsilon_to_fixed(0.5 * (epoch + 1)), DELTA


def _accounts(start: int, count: int) -> list[LocalAccount]:
    Account.enable_unaudited_hdwallet_features()
    return [
        Account.from_mnemonic(DEV_MNEMONIC, account_path=f"{DEV_HD_PREFIX}/{i}")
        for i in range(start, start + count)
    ]


def _digest(member: int, round_: int) -> bytes:
    return hashlib.sha256(f"model {member} {round_}".encode()).digest()


def _consortium(chain: Chain, n: int, **config: Any) -> tuple[Ledger, list[Ledger]]:
    """A fresh contract with `n` funded, registered members (accounts beyond the dev ten)."""
    admin = chain.dev_accounts[0]
    settings: dict[str, Any] = {
        "rounds_per_epoch": ROUNDS_PER_EPOCH,
        "min_reports": 1,
        "grace_rounds": 0,
        **config,
    }
    ledger = Ledger.deploy(chain, admin, DeployConfig(max_members=max(n, 1), **settings))
    accounts = _accounts(10, n)
    funder = ledger._sender
    assert funder is not None
    for acct in accounts:
        if chain.w3.eth.get_balance(acct.address) < 10**19:
            funder.send(acct.address, "0x", value=10**20, description={"function": "transfer"})
        ledger.register(acct.address, f"peer-{acct.address[2:10]}", f"hospital {acct.address[:8]}")
    return ledger, [ledger.as_account(a) for a in accounts]


def _neighbours(i: int, n: int, k: int) -> list[int]:
    return [(i + d) % n for d in range(1, k + 1)]


def _finalize_gas(chain: Chain, n: int, degree: int) -> int:
    """Gas of finalizing one epoch where each of `n` members reported `degree` peers."""
    ledger, members = _consortium(chain, n)
    ledger.fund(10**18)
    for i, m in enumerate(members):
        scores = {j: SCORE * (1 + (i + j) % 7) for j in _neighbours(i, n, degree)}
        items = [Commitment(r, _digest(i, r), 100) for r in range(ROUNDS_PER_EPOCH + 1)]
        m.commit_and_report(items, 0, scores, *_spend(0))
    return ledger.finalize(0).gas_used


def _items(member: int, first: int, count: int) -> list[Commitment]:
    return [Commitment(k, _digest(member, k), 100) for k in range(first, first + count)]


def gas_figures(chain: Chain) -> dict[str, Any]:
    n = 11  # a reporter scores 10 peers
    r = ROUNDS_PER_EPOCH
    # Grace rounds of 2r widen the round window (roundLimit = (nextEpoch + 2) * r + grace) so
    # that the 20-rounds-per-epoch case fits before epoch 0 is finalized; gas does not depend
    # on the grace (an immutable).
    ledger, members = _consortium(chain, n, grace_rounds=2 * r)
    ledger.fund(10**19)
    others = {i: {j: SCORE for j in range(n) if j != i} for i in range(n)}  # 10 scores each
    single = [members[0].commit(k, _digest(0, k), 100).gas_used for k in range(r + 1)]
    batch_first = members[1].commit_batch(_items(1, 0, r)).gas_used
    batch = members[1].commit_batch(_items(1, r, r)).gas_used
    report_first = members[2].report_fixed(0, others[2], *_spend(0)).gas_used
    report = members[0].report_fixed(0, others[0], *_spend(0)).gas_used
    # One commitAndReport per member per epoch, after a first epoch (the member's bitmap word
    # exists): the epoch's first reporter also pays for the epoch's reports-hash slot.
    combined: dict[int, tuple[int, int]] = {}
    for rounds, epoch, (first_m, later_m) in ((r, 1, (3, 8)), (2 * r, 2, (9, 10))):
        gas = []
        for i in (first_m, later_m):
            members[i].commit_batch(_items(i, 0, rounds))
            gas.append(
                members[i]
                .commit_and_report(_items(i, rounds, rounds), epoch, others[i], *_spend(epoch))
                .gas_used
            )
        combined[rounds] = (gas[0], gas[1])
    for i in (4, 5, 6, 7):  # past epoch 0's close round, r + 2r
        members[i].commit_batch(_items(i, 0, 3 * r + 1))
    members[4].report_fixed(0, {0: SCORE, 1: 2 * SCORE}, *_spend(0))
    ledger.finalize(0, wait_for_reports=False)  # 1, 5, 6 and 7 never reported it
    withdraws = [m.withdraw().gas_used for m in members[:2]]
    steady_commit = sum(single[1:]) / r
    new_word = batch_first - batch  # a member's next 256-round bitmap word: zero to nonzero
    fin10 = _finalize_gas(chain, 10, 9)
    fin50 = _finalize_gas(chain, 50, 10)
    fin50_full = _finalize_gas(chain, 50, 49)

    def amortized(rounds: int) -> dict[str, Any]:
        first, later = combined[rounds]
        return {
            "assumes": f"{rounds} rounds per epoch, reports of 10 scores, one commitAndReport"
            " per member per epoch",
            "first_reporter_of_epoch": first / rounds,
            "later_reporters": later / rounds,
            "average_11_members": (first + (n - 1) * later) / (n * rounds),
            "new_bitmap_word_every_256_rounds": new_word / 256,
            "worst_case_all_in": first / rounds + new_word / 256,
        }

    headline = amortized(r)
    return {
        "rounds_per_epoch": r,
        "commit_first_ever": single[0],
        "commit": steady_commit,
        "commit_batch_10_first": batch_first,
        "commit_batch_10": batch,
        "report_10_scores_first_in_epoch": report_first,
        "report_10_scores": report,
        "commit_and_report_10_rounds_10_scores_first_in_epoch": combined[r][0],
        "commit_and_report_10_rounds_10_scores": combined[r][1],
        "commit_and_report_20_rounds_10_scores_first_in_epoch": combined[2 * r][0],
        "commit_and_report_20_rounds_10_scores": combined[2 * r][1],
        "finalize_10_members_9_scores_each": fin10,
        "finalize_50_members_10_scores_each": fin50,
        "finalize_50_members_49_scores_each": fin50_full,
        "withdraw": max(withdraws),
        # The headline: gas per member per round for commitments plus reports, worst case
        # (the epoch's first reporter, plus a new bitmap word every 256 rounds).
        "headline_gas_per_member_per_round": headline["worst_case_all_in"],
        "headline_assumes": "10 rounds per epoch, reports of 10 scores, one commitAndReport per"
        " member per epoch; worst case (first reporter of the epoch, new bitmap words included)",
        "amortized_per_member_per_round_10_rounds_per_epoch": headline,
        "extra_amortized_per_member_per_round_20_rounds_per_epoch": amortized(2 * r),
        "per_member_per_round": {
            "commit_every_round_plus_report": (r * steady_commit + report) / r,
            "commit_batch_per_epoch_plus_report": (batch + report) / r,
            "commit_and_report_per_epoch": combined[r][0] / r,
            "finalize_share_10_members": fin10 / (10 * r),
            "finalize_share_50_members": fin50 / (50 * r),
        },
        "naive_reference_per_member_per_round": 47_000,
        "target_per_member_per_round": 10_000,
        "meets_target": headline["worst_case_all_in"] <= 10_000,
    }


def calldata_gas(data: bytes) -> int:
    return sum(16 if b else 4 for b in data)


def commit_and_report_breakdown() -> dict[str, Any]:
    """Where a commitAndReport's gas goes (10 rounds, 10 scores), from an opcode trace of a
    separate Anvil started with --steps-tracing: the epoch's first reporter and a later one."""
    with connect_anvil(extra_args=["--steps-tracing"]) as chain:
        n, r = 11, ROUNDS_PER_EPOCH
        _, members = _consortium(chain, n)
        out: dict[str, Any] = {}
        for case, i in (("first_reporter_of_epoch", 1), ("later_reporter", 2)):
            members[i].commit_batch(_items(i, 0, r))
            scores = {j: SCORE for j in range(n) if j != i}
            result = members[i].commit_and_report(_items(i, r, r), 1, scores, *_spend(1))
            out[case] = _breakdown(chain, result.tx_hash, result.gas_used)
        return out


def _breakdown(chain: Chain, tx_hash: str, gas_used: int) -> dict[str, Any]:
    w3 = chain.w3
    data = bytes(w3.eth.get_transaction(tx_hash)["input"])  # type: ignore[arg-type]
    trace = w3.provider.make_request(
        "debug_traceTransaction",  # type: ignore[arg-type]
        [tx_hash, {"disableStorage": True, "disableMemory": True, "disableStack": True}],
    )
    steps = trace["result"]["structLogs"]
    by_op: dict[str, int] = {}
    count: dict[str, int] = {}
    for step in steps:
        by_op[step["op"]] = by_op.get(step["op"], 0) + int(step["gasCost"])
        count[step["op"]] = count.get(step["op"], 0) + 1
    storage = by_op.get("SLOAD", 0) + by_op.get("SSTORE", 0)
    logs = sum(v for k, v in by_op.items() if k.startswith("LOG"))
    hashing = by_op.get("KECCAK256", 0)
    calldata = calldata_gas(data)
    return {
        "total": gas_used,
        "base": 21_000,
        "calldata": calldata,
        "calldata_bytes": len(data),
        "storage": storage,
        "storage_sloads": count.get("SLOAD", 0),
        "storage_sstores": count.get("SSTORE", 0),
        "logs": logs,
        "logs_count": sum(v for k, v in count.items() if k.startswith("LOG")),
        "keccak": hashing,
        "other_execution": gas_used - 21_000 - calldata - storage - logs - hashing,
    }


def throughput(chain: Chain, count: int = 200) -> dict[str, Any]:
    _, members = _consortium(chain, 1, grace_rounds=count)  # a window wide enough for them
    start = time.perf_counter()
    for k in range(count):
        members[0].commit(k, _digest(0, k), 100)
    elapsed = time.perf_counter() - start
    return {"sequential_commits": count, "seconds": elapsed, "tx_per_second": count / elapsed}


def audit_time(chain: Chain, rounds: int = 1000, n: int = 10) -> dict[str, Any]:
    """Build rounds x n members (commitments, a report per member per epoch, finalizations),
    then time a full audit."""
    ledger, members = _consortium(chain, n)
    ledger.fund(10**20)
    epochs = rounds // ROUNDS_PER_EPOCH
    start = time.perf_counter()
    for e in range(epochs):
        for i, m in enumerate(members):
            items = [
                Commitment(k, _digest(i, k), 100)
                for k in range(e * ROUNDS_PER_EPOCH, (e + 1) * ROUNDS_PER_EPOCH)
            ]
            scores = {j: SCORE * (1 + (i * 7 + j + e) % 5) for j in range(n) if j != i}
            m.commit_and_report(items, e, scores, *_spend(e))
        if e >= 1:
            ledger.finalize(e - 1)
    build = time.perf_counter() - start
    start = time.perf_counter()
    report = run_audit(ledger)
    elapsed = time.perf_counter() - start
    return {
        "rounds": rounds,
        "members": n,
        "build_seconds": build,
        "events": report.events,
        "commitments": len(report.commitments),
        "epochs_finalized": report.epochs_finalized,
        "audit_seconds": elapsed,
        "audit_ok": report.ok,
        "findings": len(report.findings),
    }


def run_ledger_bench(json_out: Path) -> dict[str, Any]:
    console = Console()
    results: dict[str, Any] = {
        "chain": "anvil (managed, hardfork shanghai)",
        "machine": {"python": platform.python_version(), "cpu": platform.processor()},
    }
    with connect("anvil") as chain:
        console.print("gas per write ...")
        results["gas"] = gas_figures(chain)
        console.print("sequential throughput ...")
        results["throughput"] = throughput(chain)
        console.print("audit of 1,000 rounds x 10 members ...")
        results["audit"] = audit_time(chain)
    console.print("gas breakdown of commitAndReport (opcode trace) ...")
    results["gas_breakdown_commit_and_report_10_rounds_10_scores"] = commit_and_report_breakdown()
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(results, indent=2) + "\n")
    _print(console, results)
    console.print(f"wrote {json_out}")
    return results


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,.0f}"


def _print(console: Console, results: dict[str, Any]) -> None:
    gas = results["gas"]
    console.print(
        f"[bold]headline: {gas['headline_gas_per_member_per_round']:,.0f} gas per member per"
        f" round[/bold] ({gas['headline_assumes']}); target"
        f" {gas['target_per_member_per_round']:,}: {'met' if gas['meets_target'] else 'MISSED'}"
    )
    table = Table(title="Ledger benchmark (Anvil)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in gas.items():
        if key.startswith("headline") or key == "meets_target":
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                table.add_row(f"{key}: {sub}", _fmt(v))
        else:
            table.add_row(f"gas: {key}", _fmt(value))
    breakdown = results.get("gas_breakdown_commit_and_report_10_rounds_10_scores", {})
    for case, parts in breakdown.items():
        for part, v in parts.items():
            table.add_row(f"commitAndReport, {case}: {part}", _fmt(v))
    table.add_row("sequential tx/s", f"{results['throughput']['tx_per_second']:.1f}")
    audit = results["audit"]
    table.add_row("audit events", str(audit["events"]))
    table.add_row("audit seconds (1,000 rounds x 10)", f"{audit['audit_seconds']:.2f}")
    table.add_row("audit ok", str(audit["audit_ok"]))
    console.print(table)
