"""Signing and sending transactions for one account: local nonces, fees, reverts decoded.

web3.py 8 does not fill nonces in build_transaction; this keeps one counter per sender,
resynchronised from the chain after any failure. Every send is estimated first, so a revert
is reported (as LedgerRevert) without spending gas.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import requests
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ProviderConnectionError, TimeExhausted, Web3RPCError
from web3.types import TxParams

from ledger.errors import ChainUnavailable, LedgerRevert
from ledger.revert import ErrorDecoder, to_revert

GAS_MARGIN = 1.25  # estimates can be a little low when storage warms differently
PRIORITY_FEE = 10**9
FEE_TTL = 5.0  # seconds a fee quote is reused; refreshed at once if a send is underpriced
RECEIPT_TIMEOUT = 60.0
T = TypeVar("T")
# Transport failures: the chain is down or restarting. Retryable, unlike a revert.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    ProviderConnectionError,
    ConnectionError,
    TimeExhausted,
)


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction."""

    tx_hash: str
    block_number: int
    gas_used: int
    contract_address: str | None = None


def transport_guard(backend: str, call: Callable[[], T]) -> T:
    """Run `call`, mapping transport failures to ChainUnavailable."""
    try:
        return call()
    except TRANSPORT_ERRORS as exc:
        raise ChainUnavailable(backend, f"{type(exc).__name__}: {exc}") from exc


class Sender:
    """Sends transactions from one account. Thread-safe: a lock serialises nonce use."""

    def __init__(self, w3: Web3, account: LocalAccount, decoder: ErrorDecoder, backend: str):
        self.w3 = w3
        self.account = account
        self.decoder = decoder
        self.backend = backend
        self._lock = threading.Lock()
        self._nonce: int | None = None
        self._chain_id: int | None = None
        self._max_fee: int | None = None
        self._fee_at = 0.0

    @property
    def address(self) -> str:
        return str(self.account.address)

    def send(
        self,
        to: str | None,
        data: str,
        *,
        value: int = 0,
        description: dict[str, Any],
        gas: int | None = None,
    ) -> TxResult:
        """Estimate, sign, send, wait. Raises LedgerRevert or ChainUnavailable."""
        with self._lock:
            try:
                return transport_guard(
                    self.backend, lambda: self._send(to, data, value, description, gas)
                )
            except BaseException:
                self._nonce = None  # unknown whether it was consumed: ask the chain again
                raise

    def _send(
        self, to: str | None, data: str, value: int, description: dict[str, Any], gas: int | None
    ) -> TxResult:
        tx: dict[str, Any] = {"from": self.address, "data": data, "value": value}
        if to is not None:
            tx["to"] = to
        if gas is None:
            gas = int(
                self._call_checked(
                    lambda: self.w3.eth.estimate_gas(cast(TxParams, tx)), description
                )
            )
            gas = int(gas * GAS_MARGIN) + 10_000
        if self._chain_id is None:
            self._chain_id = self.w3.eth.chain_id
        if self._nonce is None:
            self._nonce = self.w3.eth.get_transaction_count(self.account.address, "pending")
        tx.update(
            gas=gas,
            nonce=self._nonce,
            chainId=self._chain_id,
            maxFeePerGas=self._fee(),
            maxPriorityFeePerGas=PRIORITY_FEE,
        )
        del tx["from"]
        signed = self.account.sign_transaction(tx)
        try:
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except Web3RPCError as exc:
            if "fee" in str(exc).lower():
                self._max_fee = None  # base fee rose: requote on the caller's retry
            revert = to_revert(self.decoder, exc, description)
            if revert is not None and "revert" in str(exc).lower():
                raise revert from exc
            raise
        except Exception as exc:
            revert = to_revert(self.decoder, exc, description)
            if revert is not None:
                raise revert from exc
            raise
        self._nonce += 1
        receipt = self.w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=RECEIPT_TIMEOUT, poll_latency=0.005
        )
        if receipt["status"] != 1:
            # Raced with another write between estimate and mining: replay for the reason.
            self._call_checked(
                lambda: self.w3.eth.call(
                    cast(TxParams, {**tx, "from": self.address}), receipt["blockNumber"] - 1
                ),
                description,
            )
            raise LedgerRevert("Reverted", {"tx_hash": HexBytes(tx_hash).to_0x_hex()}, description)
        address = receipt.get("contractAddress")
        return TxResult(
            tx_hash=HexBytes(tx_hash).to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            contract_address=str(address) if address else None,
        )

    def _call_checked(self, call: Callable[[], T], description: dict[str, Any]) -> T:
        try:
            return call()
        except TRANSPORT_ERRORS:
            raise
        except Exception as exc:
            revert = to_revert(self.decoder, exc, description)
            if revert is None:
                raise
            raise revert from exc

    def _fee(self) -> int:
        now = time.monotonic()
        if self._max_fee is None or now - self._fee_at > FEE_TTL:
            block = self.w3.eth.get_block("latest")
            base = int(block.get("baseFeePerGas", 0) or 0)
            self._max_fee = 2 * base + PRIORITY_FEE
            self._fee_at = now
        return self._max_fee
