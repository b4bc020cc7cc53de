"""In-process chain: eth-tester on py-evm (Shanghai rules), funded dev accounts."""

from __future__ import annotations

from eth.vm.forks import ShanghaiVM
from eth_tester import EthereumTester, PyEVMBackend
from web3 import EthereumTesterProvider, Web3

from ledger.accounts import DEV_ACCOUNT_COUNT, DEV_HD_PREFIX, DEV_MNEMONIC, dev_accounts
from ledger.backends.base import Chain


def connect_embedded() -> Chain:
    backend = PyEVMBackend(
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
