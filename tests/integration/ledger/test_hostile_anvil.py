"""The hostile-member tests of tests/unit/ledger/test_hostile.py, run against a real Anvil."""

import pytest

from tests.unit.ledger.test_hostile import *  # noqa: F403  (the same tests, another chain)

pytestmark = pytest.mark.integration
