"""Membership's ledger reads and writes for privacy, on the embedded chain served over
JSON-RPC (as the simulator serves it to nodes): active members' X25519 keys and the maximum
epsilon per refresh, and reports that carry the privacy spend (with or without scores)."""

from __future__ import annotations

from pathlib import Path

from ledger.accounts import write_key_file
from ledger.backends.served import connect_served_embedded
from ledger.testing import dev_consortium, peer_id
from node.config import LedgerSection
from node.membership import Membership


def test_refresh_reads_keys_and_maximum_and_reports_carry_the_spend(tmp_path: Path) -> None:
    with connect_served_embedded() as chain:
        admin, members = dev_consortium(chain, 3)
        members[1].set_x25519_key(b"\x02" * 32)
        members[2].set_x25519_key(b"\x03" * 32)
        admin.set_max_epsilon(5)
        key_file = tmp_path / "eth.key"
        write_key_file(key_file, chain.dev_accounts[1])
        section = LedgerSection(
            enabled=True, chain=chain.url, contract=admin.address, key_file=key_file,
            flush_seconds=0.05,
        )  # fmt: skip
        membership = Membership(section, peer_id(1), tmp_path / "outbox.sqlite")
        try:
            assert membership.x25519_keys == {peer_id(2): b"\x02" * 32, peer_id(3): b"\x03" * 32}
            assert membership.max_epsilon == 5.0
            admin.deactivate(members[2].sender_address)  # an inactive member's key is not used
            admin.set_max_epsilon(None)
            membership.refresh()
            assert membership.x25519_keys == {peer_id(2): b"\x02" * 32}
            assert membership.max_epsilon is None
            membership.report(0, {peer_id(2): 1.0, peer_id(3): 2.0}, epsilon=1.5, delta=1e-5)
            membership.report(1, {peer_id(3): 1.0}, epsilon=2.5, delta=1e-5)  # no member left
        finally:
            assert membership.close(drain_seconds=60) == 0
        me = members[0]
        spent = [(p.epoch, p.epsilon, p.delta) for p in me.privacy_spent(me.sender_address)]
        assert spent == [(0, 1_500_000, 10**13), (1, 2_500_000, 10**13)]
        assert [len(r.entries) for e in (0, 1) for r in me.reports(e)] == [10, 0]
