"""Helpers for tests and local experiments: a dev consortium on a dev chain, and chain
snapshots (eth-tester and Anvil) so each test starts from the same state quickly."""

from __future__ import annotations

import hashlib
from typing import Any

from ledger.backends.base import Chain
from ledger.contract import DeployConfig, Ledger
from ledger.errors import BackendError

PEER_PREFIX = "12D3KooWdev"


def digest_of(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def peer_id(i: int) -> str:
    return f"{PEER_PREFIX}{i:04d}"


def dev_consortium(
    chain: Chain, members: int = 5, config: DeployConfig | None = None
) -> tuple[Ledger, list[Ledger]]:
    """Deploy as dev account 0 (the admin) and register dev accounts 1..members."""
    admin = Ledger.deploy(chain, chain.dev_accounts[0], config)
    ledgers = []
    for i in range(1, members + 1):
        account = chain.dev_accounts[i]
        admin.register(account.address, peer_id(i), f"hospital {i}")
        ledgers.append(admin.as_account(account))
    return admin, ledgers


def snapshot(chain: Chain) -> Any:
    if chain.name == "embedded":
        return chain.process.take_snapshot()  # type: ignore[attr-defined]
    response = chain.w3.provider.make_request("evm_snapshot", [])  # type: ignore[arg-type]
    if "result" not in response:
        raise BackendError(chain.name, f"evm_snapshot failed: {response}")
    return response["result"]


def revert(chain: Chain, snap: Any) -> None:
    """Back to `snap`. Anvil consumes a snapshot on revert: take a new one afterwards."""
    if chain.name == "embedded":
        chain.process.revert_to_snapshot(snap)  # type: ignore[attr-defined]
        return
    response = chain.w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
    if response.get("result") is not True:
        raise BackendError(chain.name, f"evm_revert failed: {response}")


def advance_time(chain: Chain, seconds: int) -> None:
    """Move the dev chain's clock `seconds` forward (and mine a block there)."""
    if chain.name == "embedded":
        latest = chain.w3.eth.get_block("latest")["timestamp"]
        chain.process.time_travel(latest + seconds)  # type: ignore[attr-defined]
        return
    for method, params in (("evm_increaseTime", [seconds]), ("evm_mine", [])):
        response = chain.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if "error" in response:
            raise BackendError(chain.name, f"{method} failed: {response}")
