"""The chain backends' table: `connect` dispatches by it and names it when a chain is unknown."""

import pytest

from ledger.backends import CHAIN_BACKENDS, connect
from ledger.errors import BackendError


def test_an_unknown_chain_is_refused_naming_every_backend():
    with pytest.raises(BackendError) as info:
        connect("sepolia")
    for name in CHAIN_BACKENDS:
        assert name in str(info.value)


def test_connect_uses_the_table(monkeypatch):
    opened = []
    monkeypatch.setitem(CHAIN_BACKENDS, "anvil", lambda state_path: opened.append(state_path))
    connect("anvil", state_path=None)
    assert opened == [None]
