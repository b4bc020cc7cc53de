"""One small end-to-end pass over JSON-RPC on Ganache (slow: ~10 tx/s) and on the embedded chain
as the simulator serves it to node processes: the same API and the same decoded custom errors
as on the other backends."""

import pytest

from ledger.audit import run_audit
from ledger.backends import Chain, connect
from ledger.backends.served import connect_served_embedded
from ledger.contract import DeployConfig
from ledger.testing import dev_consortium, digest_of
from ledger.views import Commitment
from tests.unit.ledger.support import raises_revert

pytestmark = pytest.mark.integration


def served_embedded() -> Chain:
    chain = connect_served_embedded()
    assert chain.url and chain.url.startswith("http://127.0.0.1:")
    return chain


@pytest.mark.parametrize("open_chain", [lambda: connect("ganache"), served_embedded])
def test_round_trip_over_json_rpc(open_chain) -> None:
    with open_chain() as chain:
        config = DeployConfig(max_members=4, rounds_per_epoch=1, min_reports=1, grace_rounds=0)
        admin, members = dev_consortium(chain, 3, config)
        admin.fund(10**18)
        members[0].commit_and_report([Commitment(0, digest_of("a"), 5)], 0, {1: 2_000_000})
        with raises_revert("AlreadyCommitted", member=members[0].sender_address, round=0):
            members[0].commit(0, digest_of("again"), 5)
        with raises_revert("InvalidConfig", field="maxMembers", value=0):
            admin.set_max_members(0)
        members[1].commit_batch([Commitment(r, digest_of(f"b{r}"), 5) for r in (0, 1)])
        members[2].commit(1, digest_of("c1"), 5)
        admin.finalize(0)
        assert admin.member(members[1].sender_address).owed == 10**18  # type: ignore[union-attr]
        members[1].withdraw()
        report = run_audit(admin)
        assert report.ok, report.findings
        assert report.paid == 10**18 and len(report.commitments) == 4
