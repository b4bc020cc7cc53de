"""The connected-chain handle every backend returns (`ledger.backends.connect` picks one)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from eth_account.signers.local import LocalAccount
from web3 import Web3


@dataclass
class Chain:
    """A reachable chain: a Web3 client, its dev accounts if it is a local chain, a closer."""

    name: str
    w3: Web3
    dev_accounts: list[LocalAccount] = field(default_factory=list)
    url: str | None = None  # JSON-RPC URL other processes can use (None for embedded)
    process: object | None = None  # the managed process (AnvilProcess, GanacheProcess)
    _closer: Callable[[], None] | None = None

    def close(self) -> None:
        if self._closer is not None:
            closer, self._closer = self._closer, None
            closer()

    def __enter__(self) -> Chain:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
