"""Turn a revert, as each backend reports it, into one LedgerRevert naming the custom error.

Anvil and Ganache surface revert data through web3's ContractLogicError (as a hex string, or
inside a dict for Ganache's eth_estimateGas); eth-tester raises TransactionFailed whose
message embeds the bytes. The selector is decoded against the contract's ABI here, so every
backend yields the same error name and arguments.
"""

from __future__ import annotations

import ast
from typing import Any

from eth_abi import decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from web3.exceptions import ContractLogicError

from ledger.errors import LedgerRevert

try:  # eth-tester is only needed for the embedded backend
    from eth_tester.exceptions import TransactionFailed
except ImportError:  # pragma: no cover
    TransactionFailed = None  # type: ignore[assignment,misc]

_BUILTIN_ERRORS: list[dict[str, Any]] = [
    {"type": "error", "name": "Error", "inputs": [{"name": "reason", "type": "string"}]},
    {"type": "error", "name": "Panic", "inputs": [{"name": "code", "type": "uint256"}]},
]
_PREFIX = "execution reverted: "


def _type_string(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_type_string(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return str(param["type"])


class ErrorDecoder:
    """Selector -> (name, argument names, argument types) for an ABI's errors."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._by_selector: dict[bytes, tuple[str, list[str], list[str]]] = {}
        for item in [*abi, *_BUILTIN_ERRORS]:
            if item.get("type") != "error":
                continue
            types = [_type_string(p) for p in item["inputs"]]
            names = [p["name"] or f"arg{i}" for i, p in enumerate(item["inputs"])]
            selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            self._by_selector[selector] = (item["name"], names, types)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        if len(data) < 4:
            return ("Reverted", {"data": data})
        found = self._by_selector.get(data[:4])
        if found is None:
            return ("UnknownError", {"data": data})
        name, names, types = found
        try:
            values = decode(types, data[4:])
        except Exception:  # noqa: BLE001 - malformed data from a foreign contract
            return (name, {"data": data})
        return (name, {k: _checksum(v) for k, v in zip(names, values, strict=True)})


def _checksum(value: Any) -> Any:
    if isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
        return to_checksum_address(value)
    return value


def revert_data(exc: BaseException) -> bytes | str | None:
    """The raw revert data carried by `exc` (bytes), a plain reason (str), or None."""
    if isinstance(exc, ContractLogicError):
        data: Any = exc.data
        if isinstance(data, dict):
            data = data.get("result") or data.get("data")
        if isinstance(data, str) and data.startswith("0x"):
            return bytes.fromhex(data[2:])
        if isinstance(data, bytes):
            return data
        return str(exc.message or exc)
    if TransactionFailed is not None and isinstance(exc, TransactionFailed):
        text = str(exc.args[0]) if exc.args else ""
        if isinstance(exc.args[0] if exc.args else None, bytes):
            return exc.args[0]  # type: ignore[no-any-return]
        body = text[len(_PREFIX) :] if text.startswith(_PREFIX) else text
        if body.startswith("0x"):
            try:
                return bytes.fromhex(body[2:])
            except ValueError:
                return body
        if body.startswith(("b'", 'b"')):
            try:
                value = ast.literal_eval(body)
            except (ValueError, SyntaxError):
                return body
            if isinstance(value, bytes):
                return value
        return body
    return None


def to_revert(decoder: ErrorDecoder, exc: BaseException, tx: dict[str, Any]) -> LedgerRevert | None:
    """A LedgerRevert for `exc` if it is a contract revert, else None (not ours to judge)."""
    data = revert_data(exc)
    if data is None:
        return None
    if isinstance(data, str):
        return LedgerRevert("Error", {"reason": data}, tx)
    name, args = decoder.decode(data)
    return LedgerRevert(name, args, tx)
