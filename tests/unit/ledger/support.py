"""Shared by the ledger's unit and integration tests: a 5-member dev consortium restored
from a chain snapshot before each test, and helpers to drive epochs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from ledger.backends import Chain
from ledger.contract import DeployConfig, Ledger
from ledger.errors import LedgerRevert
from ledger.testing import dev_consortium, digest_of, revert, snapshot
from ledger.views import Commitment

CONFIG = DeployConfig(
    max_members=6,
    rounds_per_epoch=2,
    min_reports=2,
    grace_rounds=0,
    reward_per_epoch=10**18,
    close_timeout=3600,
)
MEMBERS = 5
SCORE = 1_000_000
# A window no round reaches (grace rounds of 2**64 - 1): for tests of the bitmap, the events and
# the audit at huge round numbers, which the round window refuses under CONFIG.
WIDE = replace(CONFIG, grace_rounds=2**64 - 1)


@dataclass
class Ctx:
    chain: Chain
    admin: Ledger
    members: list[Ledger]
    outsider: Ledger  # a funded dev account that is not a member

    @property
    def addresses(self) -> list[str]:
        return [m.sender_address for m in self.members]


@pytest.fixture(scope="module")
def base(chain: Chain) -> dict[str, Any]:
    """The dev consortium deployed once per module on the suite's `chain` fixture, and a
    snapshot of it. (The unit and integration conftests import this and `ctx`.)"""
    admin, _ = dev_consortium(chain, MEMBERS, CONFIG)
    return {"address": admin.address, "snap": snapshot(chain)}


@pytest.fixture
def ctx(chain: Chain, base: dict[str, Any]) -> Iterator[Ctx]:
    """Each test starts from the freshly registered consortium."""
    revert(chain, base["snap"])
    base["snap"] = snapshot(chain)
    admin = Ledger(chain, base["address"], chain.dev_accounts[0])
    members = [admin.as_account(chain.dev_accounts[i]) for i in range(1, MEMBERS + 1)]
    yield Ctx(chain, admin, members, admin.as_account(chain.dev_accounts[8]))


def wide_window(ctx: Ctx) -> Ctx:
    """A fresh consortium like ctx's on the same chain, deployed with WIDE (the snapshot that
    the next test restores drops it)."""
    admin, members = dev_consortium(ctx.chain, MEMBERS, WIDE)
    return Ctx(ctx.chain, admin, members, admin.as_account(ctx.chain.dev_accounts[8]))


def commit_through(member: Ledger, first: int, last: int, tag: str = "") -> None:
    """Commit rounds first..last (inclusive) in one batch."""
    member.commit_batch(
        [Commitment(r, digest_of(f"{member.sender_address}{tag}:{r}"), 100)
         for r in range(first, last + 1)]
    )  # fmt: skip


def close_epoch(ctx: Ctx, epoch: int, who: list[int] | None = None) -> None:
    """Have members (default: all) commit up to the round that closes `epoch`."""
    rounds = CONFIG.rounds_per_epoch
    close_round = (epoch + 1) * rounds + CONFIG.grace_rounds
    for i in who if who is not None else range(len(ctx.members)):
        member = ctx.members[i]
        info = member.member(member.sender_address)
        assert info is not None
        if info.next_round <= close_round:
            commit_through(member, info.next_round, close_round)


def raises_revert(name: str, **expected: Any) -> Any:
    """Context manager: a LedgerRevert named `name` whose args include `expected`."""
    return _RevertCheck(name, expected)


class _RevertCheck:
    def __init__(self, name: str, expected: dict[str, Any]) -> None:
        self.name = name
        self.expected = expected
        self._raises = pytest.raises(LedgerRevert)

    def __enter__(self) -> Any:
        self.info = self._raises.__enter__()
        return self.info

    def __exit__(self, *exc: Any) -> bool:
        handled = self._raises.__exit__(*exc)
        err = self.info.value
        assert err.error_name == self.name, f"expected {self.name}, got {err}"
        for key, value in self.expected.items():
            assert err.arguments[key] == value, f"{key}: {err.arguments[key]!r} != {value!r}"
        return bool(handled)
