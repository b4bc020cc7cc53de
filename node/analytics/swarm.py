"""A query answered over the swarm: every `Total` is one exact secure sum over all members
(gossip.secure_sum), each in a session of its own under one fresh session for the query."""

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pandas as pd
from libp2p.crypto.keys import KeyPair
from libp2p.peer.peerinfo import PeerInfo

from gossip.exchange import ParamExchange
from gossip.secure_agg import MaskingKeys
from gossip.secure_sum import agree_session, secure_sum
from node.agreement import member_flood
from node.analytics.answer import answer
from node.analytics.disclosure import ReleaseLog
from node.analytics.query import Query
from node.config import TimeoutSection
from node.dataset import DataSchema

log = logging.getLogger(__name__)


async def answer_over_swarm(
    exchange: ParamExchange,
    identity: KeyPair,
    keys: MaskingKeys,
    members: tuple[str, ...],
    neighbours: list[PeerInfo],
    timeouts: TimeoutSection,
    frame: pd.DataFrame,
    schema: DataSchema,
    query: Query,
    release_log: ReleaseLog,
    on_sum: Callable[[int], Awaitable[None]],
) -> dict[str, Any]:
    """`query`'s released answer, computed with every member (all must take part);
    `on_sum(k)` after the k-th sum (progress, and the simulator's faults)."""
    flood = member_flood("analytics", members, neighbours, timeouts)
    session = await agree_session(exchange, identity, flood, "analytics")
    sums = 0

    async def total(vector: np.ndarray) -> np.ndarray:
        nonlocal sums
        sums += 1
        at = dataclasses.replace(flood, session=f"{session}/{sums}")
        result = await secure_sum(exchange, identity, keys, at, np.asarray(vector, np.float64))
        await on_sum(sums)
        return result

    result = await answer(frame, schema, query, release_log, total)
    log.info("analytics: answered with %d secure sums over %d members", sums, len(members))
    return {"members": len(members), "secure_sums": sums, **result}
