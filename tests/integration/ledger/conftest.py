from collections.abc import Iterator

import pytest

from ledger.backends import Chain, connect
from tests.unit.ledger.support import base, ctx

__all__ = ["base", "chain", "ctx"]  # `base` and `ctx` are shared with the unit suite


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    """A real Anvil for the module; stopped by the fixture even when tests fail. A missing
    binary is an error (setup.sh installs it), not a skip."""
    with connect("anvil") as c:
        yield c
