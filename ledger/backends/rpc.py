"""Any JSON-RPC endpoint over HTTP."""

from __future__ import annotations

from web3 import Web3
from web3.providers.rpc import HTTPProvider

from ledger.backends.base import Chain


def http_web3(url: str, timeout: float = 10.0) -> Web3:
    # A short timeout: a chain that is down must not stall the outbox's flush for long.
    return Web3(HTTPProvider(url, request_kwargs={"timeout": timeout}))


def connect_rpc(url: str, timeout: float = 10.0) -> Chain:
    return Chain(name="rpc", w3=http_web3(url, timeout), url=url)
