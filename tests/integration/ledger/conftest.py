from collections.abc import Iterator
from typing import Any

import pytest

from ledger.backends import Chain, connect
from tests.unit.ledger.support import Ctx, base_fixture, ctx_fixture


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    """A real Anvil for the module; stopped by the fixture even when tests fail. A missing
    binary is an error (setup.sh installs it), not a skip."""
    with connect("anvil") as c:
        yield c


@pytest.fixture(scope="module")
def base(chain: Chain) -> dict[str, Any]:
    return base_fixture(chain)


@pytest.fixture
def ctx(chain: Chain, base: dict[str, Any]) -> Iterator[Ctx]:
    yield from ctx_fixture(chain, base)
