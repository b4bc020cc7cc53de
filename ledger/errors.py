"""The ledger's one error root and its kinds. Errors carry the values an operator needs."""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """Root of every error the ledger package raises."""


class CompilerUnavailable(LedgerError):
    """No solc 0.8.37: neither a native compiler nor solc-js (npm) was found."""


class ArtifactError(LedgerError):
    """A compiled artifact is missing or does not match its source."""


class BackendError(LedgerError):
    """A chain backend could not be started, reached or stopped."""

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"{backend}: {detail}")
        self.backend = backend
        self.detail = detail


class ChainUnavailable(BackendError):
    """The chain did not answer (down, restarting, unreachable): retry later."""


class KeyFileError(LedgerError):
    """A private key could not be loaded safely (missing, unreadable, too permissive)."""


class LedgerRevert(LedgerError):
    """The contract rejected a call with one of its custom errors (or a panic / plain revert).

    `error_name` is the Solidity error's name (e.g. "AlreadyCommitted"), `arguments` its decoded
    arguments by name, `tx` the call that was rejected (function name and arguments).
    """

    def __init__(self, error_name: str, arguments: dict[str, Any], tx: dict[str, Any]) -> None:
        shown = ", ".join(f"{k}={_show(v)}" for k, v in arguments.items())
        super().__init__(f"{error_name}({shown}) in {tx.get('function', '?')}")
        self.error_name = error_name
        self.arguments = arguments  # not `args`: BaseException.args holds the message
        self.tx = tx


class OutboxError(LedgerError):
    """The outbox database could not be used (corrupt, wrong schema, bad item)."""


class AuditError(LedgerError):
    """The audit could not run (distinct from finding mismatches, which it reports)."""


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return repr(value) if isinstance(value, str) else str(value)
