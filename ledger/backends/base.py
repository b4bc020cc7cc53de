"""The connected-chain handle every backend returns, and `connect(spec)` to pick one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.errors import BackendError


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


def connect(spec: str, *, state_path: Path | None = None, timeout: float = 10.0) -> Chain:
    """`embedded`, `anvil`, `ganache` or an http(s):// URL. `anvil` starts a managed Anvil on
    127.0.0.1 (state loaded from and saved to `state_path` if given); close() stops it."""
    if spec == "embedded":
        from ledger.backends.embedded import connect_embedded

        return connect_embedded()
    if spec == "anvil":
        from ledger.backends.anvil import connect_anvil

        return connect_anvil(state_path=state_path)
    if spec == "ganache":
        from ledger.backends.ganache import connect_ganache

        return connect_ganache()
    if spec.startswith(("http://", "https://")):
        from ledger.backends.rpc import connect_rpc

        return connect_rpc(spec, timeout=timeout)
    raise BackendError(spec, "unknown chain: use embedded, anvil, ganache or an http(s) URL")
