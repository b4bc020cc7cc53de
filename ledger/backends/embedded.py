"""In-process chain: eth-tester on py-evm (Shanghai rules), funded dev accounts."""

from __future__ import annotations

from typing import Any

from eth.vm.forks import ShanghaiVM
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from web3 import EthereumTesterProvider, Web3

from ledger.accounts import DEV_ACCOUNT_COUNT, DEV_HD_PREFIX, DEV_MNEMONIC, dev_accounts
from ledger.backends.base import Chain


def _raw(exc: TransactionFailed) -> TransactionFailed:
    """Keep revert data as a hex string: web3's eth-tester provider would otherwise decode any
    revert data as Error(string), garbling custom errors whose first argument is a string."""
    first = exc.args[0] if exc.args else None
    if isinstance(first, Exception) and first.args:
        first = first.args[0]
    if isinstance(first, bytes):
        return TransactionFailed("0x" + first.hex())
    return exc


class _RawRevertBackend(PyEVMBackend):  # type: ignore[misc]
    def estimate_gas(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().estimate_gas(*args, **kwargs)
        except TransactionFailed as exc:
            raise _raw(exc) from exc


def connect_embedded() -> Chain:
    backend = _RawRevertBackend(
        genesis_state=PyEVMBackend.generate_genesis_state(
            num_accounts=DEV_ACCOUNT_COUNT, mnemonic=DEV_MNEMONIC, hd_path=DEV_HD_PREFIX
        ),
        vm_configuration=((0, ShanghaiVM),),
        mnemonic=DEV_MNEMONIC,
        hd_path=DEV_HD_PREFIX,
    )
    tester = EthereumTester(backend)
    w3 = Web3(EthereumTesterProvider(tester))
    return Chain(name="embedded", w3=w3, dev_accounts=dev_accounts(), process=tester)
