"""A local consortium for a swarm: a chain, the contract, one Ethereum account per hospital
(key file 0600 beside its node config), the pool.

The chain runs only while the swarm does. On Anvil (the default) `open_chain` starts it from
the state saved in the run folder and closing it saves the state again, so an auditor can
replay the run afterwards with
`medswarm ledger audit --chain anvil --state <run>/chain/anvil-state.json --contract ...`.
Ganache and the embedded chain (eth-tester, served to the nodes over JSON-RPC by this
process) keep nothing: a run on them deploys, runs and settles on one live chain.
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_account import Account

from ledger.accounts import write_key_file
from ledger.audit import AuditReport, check_models, run_audit, write_audit
from ledger.backends import CHAIN_BACKENDS, Chain, connect
from ledger.backends.served import connect_served_embedded
from ledger.contract import DeployConfig, Ledger
from ledger.errors import BackendError, LedgerRevert
from ledger.privacy import delta_from_fixed, epsilon_from_fixed
from ledger.revert import ErrorDecoder
from ledger.tx import Sender
from sim.errors import SimError

STATE_FILE = "chain/anvil-state.json"
KEY_FILE = "eth.key"
ADMIN_DEV_ACCOUNT = 0  # the public dev mnemonic's account 0: throwaway local chains only


@dataclass(frozen=True)
class ConsortiumPlan:
    rounds_per_epoch: int = 5
    grace_rounds: int = 0  # an epoch closes as soon as most members reach the next one
    min_reports: int = 2
    reward_per_epoch_wei: int = 10**18
    pool_wei: int = 20 * 10**18
    gas_allowance_wei: int = 10**18  # sent to each hospital's fresh account for its writes
    max_epsilon: float | None = None  # the consortium's privacy budget per member; None: none


def open_chain(folder: Path, backend: str = "anvil") -> Chain:
    """A chain other processes can reach at `chain.url`, one of `CHAIN_BACKENDS`: Anvil keeps
    its state in `folder`, the embedded chain is served over JSON-RPC."""
    if backend not in CHAIN_BACKENDS:
        raise BackendError(backend, f"not a local chain: use {', '.join(CHAIN_BACKENDS)}")
    if backend == "anvil":
        state = folder / STATE_FILE
        state.parent.mkdir(parents=True, exist_ok=True)
        return connect("anvil", state_path=state)
    if backend == "embedded":
        return connect_served_embedded()
    return connect(backend)


def create_consortium(
    chain: Chain,
    folder: Path,
    members: Mapping[str, str],
    plan: ConsortiumPlan,
    x25519_keys: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """Deploy, set the maximum epsilon, give each node (name -> peer ID) a fresh funded
    account and register it, fund the pool; then each node given a key in `x25519_keys`
    (name -> 32-byte X25519 public key) registers it from its own account, as a member must.
    Returns what the swarm manifest keeps about the chain."""
    strangers = sorted(set(x25519_keys or {}) - set(members))
    if strangers:
        raise SimError(f"X25519 keys for nodes that are not members: {', '.join(strangers)}")
    admin_account = chain.dev_accounts[ADMIN_DEV_ACCOUNT]
    accounts = {name: Account.create() for name in members}
    # Gas money first, from a sender of its own: the Ledger below then starts from the
    # chain's nonce and keeps its own count.
    gas = Sender(chain.w3, admin_account, ErrorDecoder([]), chain.name)
    for name, account in accounts.items():
        write_key_file(folder / "nodes" / name / KEY_FILE, account)
        gas.send(account.address, "0x", value=plan.gas_allowance_wei, description={"to": name})
    admin = Ledger.deploy(
        chain,
        admin_account,
        DeployConfig(
            max_members=max(16, len(members)),
            rounds_per_epoch=plan.rounds_per_epoch,
            min_reports=plan.min_reports,
            grace_rounds=plan.grace_rounds,
            reward_per_epoch=plan.reward_per_epoch_wei,
        ),
    )
    if plan.max_epsilon is not None:
        admin.set_max_epsilon(plan.max_epsilon)
    for name, peer_id in members.items():
        admin.register(accounts[name].address, peer_id, name)
    for name, key in (x25519_keys or {}).items():
        admin.as_account(accounts[name]).set_x25519_key(key)
    admin.fund(plan.pool_wei)
    return {
        "contract": admin.address,
        "backend": chain.name,
        "state": STATE_FILE if chain.name == "anvil" else None,
        "plan": asdict(plan),
        "members": {name: a.address for name, a in accounts.items()},
    }


def admin_ledger(chain: Chain, contract: str) -> Ledger:
    return Ledger(chain, contract, chain.dev_accounts[ADMIN_DEV_ACCOUNT])


def finalize_closed_epochs(ledger: Ledger) -> list[int]:
    """Finalize every epoch the swarm has moved past; the last, still open one stays open.
    As the admin, after the run: a report still missing is not coming (a node that stopped)."""
    done: list[int] = []
    while True:
        epoch = ledger.state().next_epoch
        try:
            ledger.finalize(epoch, wait_for_reports=False)
        except LedgerRevert as exc:
            if exc.error_name == "EpochNotClosed":
                return done
            raise
        done.append(epoch)


def rewards_by_member(report: AuditReport) -> dict[str, dict[str, Any]]:
    """Per member name: the sum of its combined scores over finalized epochs, its reward, its
    privacy history (epsilon None: trained without differential privacy) and the latest
    digest of its cross-site evaluation row (0x-hex; None: none committed)."""
    rows: dict[str, dict[str, Any]] = {}
    privacy = report.privacy_by_member()
    for m in report.members:
        scores = [s for s in report.scores if s.member == m.address]
        rows[m.name] = {
            "address": m.address,
            "peer_id": m.peer_id,
            "score": sum(s.score for s in scores) / 1e6,
            "reward_wei": m.accrued,
            "epochs_scored": len(scores),
            "evaluation": m.evaluation,
            "privacy": [
                {
                    "epoch": p.epoch,
                    "epsilon": epsilon_from_fixed(p.epsilon),
                    "delta": delta_from_fixed(p.delta),
                }
                for p in privacy[m.address]
            ],
        }
    return rows


def audit(chain: Chain, contract: str) -> AuditReport:
    return run_audit(Ledger(chain, contract))


def link_models(folder: Path, names: Mapping[str, str]) -> Path:
    """folder/models/<peer ID> -> each node's out/models, the layout `ledger audit --models`
    reads (names: node name -> peer ID)."""
    models = folder / "models"
    models.mkdir(exist_ok=True)
    for name, peer_id in names.items():
        link = models / peer_id
        if not link.is_symlink():
            link.symlink_to(Path("..") / "nodes" / name / "out" / "models")
    return models


def settle(folder: Path, chain: Chain, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """After a run: finalize the closed epochs, audit the chain and the model files, and
    collect each hospital's contribution and reward."""
    contract = manifest["ledger"]["contract"]
    admin = admin_ledger(chain, contract)
    finalize_closed_epochs(admin)
    # Every finalized epoch: the nodes' outboxes finalize some during the run (to move the
    # round window), the rest here.
    finalized = list(range(admin.state().next_epoch))
    report = audit(chain, contract)
    members = rewards_by_member(report)
    check_models(report, link_models(folder, {n: m["peer_id"] for n, m in members.items()}))
    write_audit(report, folder / "audit")
    return {
        "backend": chain.name,
        "contract": contract,
        "finalized_epochs": finalized,
        "audit_ok": report.ok,
        "findings": [asdict(f) for f in report.findings],
        "models_checked": report.models_checked,
        "members": members,
        "pool_wei": report.pool,
        "max_epsilon": epsilon_from_fixed(report.max_epsilon) if report.max_epsilon else None,
        "audit_command": (
            f"medswarm ledger audit --chain anvil --state {folder / STATE_FILE} "
            f"--contract {contract} --models {folder / 'models'} --out {folder / 'audit'}"
            if chain.name == "anvil"
            else None  # the chain is gone with the run; audit/ holds the audit made before
        ),
    }
