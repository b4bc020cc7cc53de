"""The contract tests of tests/unit/ledger/test_contract.py, run against a real Anvil."""

import pytest

from tests.unit.ledger.test_contract import *  # noqa: F403  (the same tests, another chain)

pytestmark = pytest.mark.integration
