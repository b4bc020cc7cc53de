"""The hostile-member tests of tests/unit/ledger/test_hostile.py, run against a real Anvil, and
the gas of finalizing an epoch of 50 members each scoring the 49 others."""

import pytest

from ledger.backends import Chain
from medswarm.bench.ledger import _finalize_gas
from tests.unit.ledger.test_hostile import *  # noqa: F403  (the same tests, another chain)

pytestmark = pytest.mark.integration


def test_finalize_of_50_members_by_49_scores_fits_well_under_a_block(chain: Chain) -> None:
    """It was one insertion-sorted transaction of 17.2 M gas; the finalizer now sorts off
    chain and the contract checks the middle values in one pass."""
    gas = _finalize_gas(chain, 50, 49)
    print(f"finalize, 50 members x 49 scores: {gas:,} gas")
    assert gas < 7_000_000
