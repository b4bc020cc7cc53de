from collections.abc import Iterator

import pytest

from ledger.backends import Chain, connect
from tests.unit.ledger.support import base, ctx

__all__ = ["base", "chain", "ctx"]  # `base` and `ctx` are shared with the integration suite


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    with connect("embedded") as c:
        yield c
