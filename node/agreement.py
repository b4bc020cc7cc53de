"""The swarm's start: a session no earlier run had, and the feature scaling, both agreed by
every member with no server and no hospital's own column sums in clear.

The session is the hash of a fresh nonce from every member (gossip.secure_sum.agree_session):
every mask of the run is bound to it. The scaling is two exact secure sums over the members:
the columns' counts and totals, then the squared deviations from the pooled mean; every node
gets the pooled mean and standard deviation, to float64 rounding. A consortium may publish a
reference scaling instead (node config `data.scaling`): then there is no scaling agreement, and
a session only when secure aggregation needs one.
"""

import dataclasses

import numpy as np
from libp2p.crypto.keys import KeyPair
from libp2p.peer.peerinfo import PeerInfo

from gossip.exchange import ParamExchange
from gossip.secure_agg import MaskingKeys
from gossip.secure_sum import Flood, agree_session, secure_sum
from node.config import TimeoutSection
from node.scaling import Scaler, centred_squares, column_sums


def member_flood(
    session: str, members: tuple[str, ...], neighbours: list[PeerInfo], timeouts: TimeoutSection
) -> Flood:
    """A flood over every member within the start-up deadline (the start's sums, a query's).
    Only the neighbours that are members are asked: a row is taken from members only, and a
    neighbour that is not one never publishes a step (asking it cost a fetch timeout a step)."""
    return Flood(
        session=session,
        members=members,
        neighbours=tuple(n for n in neighbours if n.peer_id.to_base58() in members),
        fetch_seconds=timeouts.fetch_seconds,
        connect_seconds=timeouts.connect_seconds,
        deadline_seconds=timeouts.startup_seconds,
    )


async def agree_session_only(
    exchange: ParamExchange,
    identity: KeyPair,
    members: tuple[str, ...],
    neighbours: list[PeerInfo],
    timeouts: TimeoutSection,
) -> str:
    """The run's session alone (the scaling comes from the consortium's reference)."""
    flood = member_flood("start", members, neighbours, timeouts)
    return await agree_session(exchange, identity, flood, "start")


async def agree_start(
    exchange: ParamExchange,
    identity: KeyPair,
    keys: MaskingKeys,
    members: tuple[str, ...],
    neighbours: list[PeerInfo],
    timeouts: TimeoutSection,
    train_x: np.ndarray,
) -> tuple[str, Scaler]:
    """(the run's session, the swarm-wide scaler) from every member's training features."""
    flood = member_flood("start", members, neighbours, timeouts)
    session = await agree_session(exchange, identity, flood, "start")
    sums = await secure_sum(
        exchange, identity, keys, dataclasses.replace(flood, session=f"{session}/sums"),
        column_sums(train_x),
    )  # fmt: skip
    count, total = np.split(sums, 2)
    mean = np.where(count > 0, total / np.where(count > 0, count, 1.0), 0.0)
    centred = await secure_sum(
        exchange, identity, keys, dataclasses.replace(flood, session=f"{session}/spread"),
        centred_squares(train_x, mean),
    )  # fmt: skip
    return session, Scaler.from_moments(count, total, centred)
