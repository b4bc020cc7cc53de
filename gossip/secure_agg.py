"""Secure aggregation among gossip neighbours: a node learns the weighted sum of the models its
neighbours send it in a round, never one of them. No server, no third party.

One aggregation is node A (the aggregator) and its partners U for round r; each partner j is
also the aggregator of its own neighbourhood, so every node plays both roles every round.
Bonawitz et al. (2017)'s double masking, with the consortium's registry as the PKI:

1. masked: A asks each j in U for its masked model, telling it U, A's sample count, degree and
   mass (closed-neighbourhood sample count, 0 if unknown) and the share threshold t. j answers

       y_j = enc(w_Aj x_j) + PRG(b_j) + sum_{k in U, k != j} +-PRG(s_jk)    (mod 2**64)

   where w_Aj is the merge weight (node.merge.PAIR_WEIGHTS: from both ends' sample counts,
   degrees and masses; A computes the same from j's answer, for its own self weight),
   s_jk a seed from the X25519 agreement of j's and k's registered keys bound to (A, r, j, k),
   and b_j a fresh secret whose Shamir shares (any t of U's other members rebuild it) go with
   y_j, each sealed (ChaCha20-Poly1305) for its holder. The pairwise masks cancel in the sum.
2. seeds, only if some partners sent nothing by the deadline (the set D): A asks the others
   for their pairwise seeds with D, which lets it remove the masks that no longer cancel. Who
   does not answer joins D and the step repeats for them.
3. unmask: A sends each survivor in S = U - D the sealed shares addressed to it; it opens them
   and returns the shares of the survivors' b. A rebuilds each b_j from t shares (a survivor
   that drops now is rebuilt from the others'), removes PRG(b_j), and decodes the sum.

The promises that keep one model hidden: a holder reveals, per aggregation and member,
either its pairwise seed with it (it dropped) or its share of its b (it survived), never both;
A refuses a masked model from a member it already declared dropped; every seed and share is
bound to (A, r), so one aggregation reveals nothing about another, and the long-term keys never
leave a node. Threat model and limits: docs/privacy.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from libp2p.abc import INetStream
from libp2p.peer.peerinfo import PeerInfo

from gossip import masking, wire
from gossip.errors import GossipError, PeerMessageError, PeerUnavailable
from gossip.exchange import ParamExchange, read_exactly
from gossip.masking import MODEL_RING

log = logging.getLogger(__name__)

KIND = "secagg"
KEEP_ROUNDS = 8  # aggregations a member remembers (to answer steps 2 and 3, and to keep its word)
MAX_REASON = 300  # characters of a peer's refusal reason that we repeat

# (aggregator's samples, degree, mass, member's samples, degree, mass) -> the weight the
# aggregator gives the member's model: the same function at both ends.
WeightRule = Callable[[int, int, int, int, int, int], float]


class SecAggError(GossipError):
    """Secure aggregation cannot run: a missing key, a bad configuration."""


class _Refusal(Exception):
    """Why this member will not answer an aggregator's request (sent back as the reason)."""


@dataclass(frozen=True)
class MaskingKeys:
    """This node's X25519 key and where the members' registered public keys are found."""

    private: X25519PrivateKey
    public_of: Callable[[str], bytes | None]

    def require(self, peer: str) -> bytes:
        key = self.public_of(peer)
        if key is None:
            raise _Refusal(f"no X25519 key registered for member {peer}")
        return key


def share_threshold(fraction: float, users: int) -> int:
    """Shares needed to rebuild a member's self-mask: `fraction` of the other members, rounded
    up, at least 1."""
    return max(1, math.ceil(fraction * (users - 1) - 1e-9))


# Every seed and share is bound to the swarm's session (agreed at start: see
# gossip.secure_sum.agree_session), the aggregator and the round: reused pairwise masks would
# reveal the difference of two models once their self-masks are removed.


def _ctx(what: str, session: str, aggregator: str, round_: int, *peers: str) -> bytes:
    return masking.context("secagg", what, session, aggregator, round_, *peers)


def pair_context(session: str, aggregator: str, round_: int, a: str, b: str) -> bytes:
    return _ctx("pair", session, aggregator, round_, *sorted((a, b)))


def share_context(session: str, aggregator: str, round_: int, owner: str, holder: str) -> bytes:
    return _ctx("share", session, aggregator, round_, owner, holder)


def self_context(session: str, aggregator: str, round_: int, owner: str) -> bytes:
    return _ctx("self", session, aggregator, round_, owner)


# -- the member's side -------------------------------------------------------------------------


@dataclass
class _Offer:
    flat: np.ndarray  # this round's published parameters, flattened in wire order
    samples: int
    degree: int
    mass: int


@dataclass
class _Holding:
    """What a member keeps of one aggregation it took part in."""

    users: tuple[str, ...]
    threshold: int
    answer: list[bytes]  # its masked model and sealed shares: the same bytes if asked again
    seeds_revealed: set[str] = field(default_factory=set)
    shares_revealed: set[str] = field(default_factory=set)


class SecAggMember:
    """This node as a neighbour of aggregating nodes: it masks its model for each of them and
    keeps the double-masking promises. Register `handle` as the exchange's `secagg` handler."""

    def __init__(
        self,
        me: str,
        session: str,
        keys: MaskingKeys,
        weight: WeightRule,
        min_threshold_fraction: float,
    ) -> None:
        self.me = me
        self.session = session
        self.keys = keys
        self.weight = weight
        self.min_fraction = min_threshold_fraction
        self._offers: dict[int, _Offer] = {}
        self._holdings: dict[tuple[str, int], _Holding] = {}
        self._offered = trio.Condition()
        self.served: dict[str, int] = {}  # per aggregator, the newest round we masked for it
        self.last_request = 0.0  # trio time of the last request answered
        self.retired: str | None = None  # why this node masks no new models, once it stops

    async def offer(
        self, round_: int, flat: np.ndarray, samples: int, degree: int, mass: int = 0
    ) -> None:
        """This round's parameters (as published) and the facts weighed with them (`mass`: this
        node's closed-neighbourhood sample count, 0 if unknown), for the aggregators that ask."""
        self._offers[round_] = _Offer(np.asarray(flat, np.float64), samples, degree, mass)
        for old in [r for r in self._offers if r <= round_ - KEEP_ROUNDS]:
            del self._offers[old]
        for key in [k for k in self._holdings if k[1] <= round_ - KEEP_ROUNDS]:
            del self._holdings[key]
        async with self._offered:
            self._offered.notify_all()

    async def handle(self, aggregator: str, msg: dict[str, Any]) -> list[bytes]:
        """Answer one request of `aggregator` (the authenticated peer): the frames to send."""
        self.last_request = trio.current_time()
        try:
            op, round_, users = _common_fields(msg)
            if op == "masked":
                return await self._masked(aggregator, round_, users, msg)
            holding = self._holdings.get((aggregator, round_))
            if holding is None or holding.users != users:
                raise _Refusal(
                    f"no aggregation by {aggregator} in round {round_} with these members"
                )
            if op == "seeds":
                return [self._seeds(aggregator, round_, holding, _peer_list(msg, "dropped"))]
            return [self._unmask(aggregator, round_, holding, msg)]
        except _Refusal as exc:
            log.warning("secure aggregation: refused %s: %s", aggregator, exc)
            return [wire.frame({"v": wire.WIRE_VERSION, "status": "refused", "reason": str(exc)})]

    async def _masked(
        self, aggregator: str, round_: int, users: tuple[str, ...], msg: dict[str, Any]
    ) -> list[bytes]:
        if self.retired is not None and (aggregator, round_) not in self._holdings:
            raise _Refusal(self.retired)
        if self.me not in users or aggregator in users:
            raise _Refusal("the members must include this node and not the aggregator")
        threshold, samples, degree, mass, wait = (
            _int(msg, "threshold"),
            _int(msg, "samples"),
            _int(msg, "degree"),
            _int(msg, "mass"),
            msg.get("wait"),
        )
        least = share_threshold(self.min_fraction, len(users))
        if not least <= threshold <= len(users) - 1:
            raise _Refusal(
                f"share threshold {threshold} for {len(users)} members: this node needs "
                f"{least} to {len(users) - 1}"
            )
        if samples < 1 or degree < len(users) or not isinstance(wait, float):
            raise _Refusal("samples must be >= 1, degree >= the members, wait a float")
        if mass != 0 and mass < samples:
            raise _Refusal(f"mass {mass} below the aggregator's own {samples} samples (0: unknown)")
        held = self._holdings.get((aggregator, round_))
        if held is not None:
            if held.users != users or held.threshold != threshold:
                raise _Refusal(f"round {round_} was already masked for other members")
            return held.answer  # idempotent: a retry gets the very same masks and shares
        offer = await self._wait_for(round_, wait)
        if offer is None:
            return [wire.frame({"v": wire.WIRE_VERSION, "status": "not_ready"})]
        answer = self._mask(aggregator, round_, users, threshold, offer, (samples, degree, mass))
        self._holdings[(aggregator, round_)] = _Holding(users, threshold, answer)
        self.served[aggregator] = max(self.served.get(aggregator, -1), round_)
        return answer

    async def _wait_for(self, round_: int, wait: float) -> _Offer | None:
        if self._offers and round_ < min(self._offers):
            raise _Refusal(f"round {round_} is no longer held")
        with trio.move_on_after(min(max(wait, 0.0), 120.0)):
            while round_ not in self._offers:
                async with self._offered:
                    await self._offered.wait()
            return self._offers[round_]
        return None

    def _mask(
        self,
        aggregator: str,
        round_: int,
        users: tuple[str, ...],
        threshold: int,
        offer: _Offer,
        claims: tuple[int, int, int],
    ) -> list[bytes]:
        """`claims`: the aggregator's (samples, degree, mass)."""
        others = [u for u in users if u != self.me]
        keys = {u: self.keys.require(u) for u in others}
        w = self.weight(*claims, offer.samples, offer.degree, offer.mass)
        secret = masking.new_secret()
        seeds = {
            u: masking.pair_seed(
                self.keys.private,
                keys[u],
                pair_context(self.session, aggregator, round_, self.me, u),
            )
            for u in others
        }
        self_seed = masking.self_mask_seed(
            secret, self_context(self.session, aggregator, round_, self.me)
        )
        y = masking.masked(MODEL_RING, w * offer.flat, self.me, seeds, self_seed)
        shares = masking.split_secret(secret, threshold, len(others))
        sealed = {
            u: masking.seal_share(
                self.keys.private,
                keys[u],
                share_context(self.session, aggregator, round_, self.me, u),
                s,
            )
            for u, s in zip(others, shares, strict=True)
        }
        header = {
            "v": wire.WIRE_VERSION,
            "status": "ok",
            "op": "masked",
            "round": round_,
            "sender": self.me,
            "samples": offer.samples,
            "degree": offer.degree,
            "mass": offer.mass,
            "length": int(y.size),
            "shares": sealed,
        }
        return [wire.frame(header), MODEL_RING.to_bytes(y)]

    def _seeds(
        self, aggregator: str, round_: int, holding: _Holding, dropped: tuple[str, ...]
    ) -> bytes:
        for d in dropped:
            if d not in holding.users or d == self.me:
                raise _Refusal(f"{d} is not another member of this aggregation")
            if d in holding.shares_revealed:
                raise _Refusal(f"already revealed a share of {d}'s self-mask: not its seed too")
        seeds = {}
        for d in dropped:
            key = self.keys.require(d)
            ctx = pair_context(self.session, aggregator, round_, self.me, d)
            seeds[d] = masking.pair_seed(self.keys.private, key, ctx)
            holding.seeds_revealed.add(d)
        return wire.frame({"v": wire.WIRE_VERSION, "status": "ok", "op": "seeds", "seeds": seeds})

    def _unmask(
        self, aggregator: str, round_: int, holding: _Holding, msg: dict[str, Any]
    ) -> bytes:
        survivors = _peer_list(msg, "survivors")
        sealed = msg.get("shares")
        if self.me not in survivors or not set(survivors) <= set(holding.users):
            raise _Refusal(
                "the survivors must be members of this aggregation, this node among them"
            )
        if not isinstance(sealed, dict) or set(sealed) != set(survivors) - {self.me}:
            raise _Refusal("expected one sealed share from every other survivor")
        shares: dict[str, bytes] = {}
        bad: dict[str, str] = {}
        for owner, box in sealed.items():
            if owner in holding.seeds_revealed:
                bad[owner] = "its pairwise seed was revealed: declared dropped, not unmasked"
                continue
            try:
                if not isinstance(box, bytes):
                    raise masking.ShareError("a sealed share must be bytes")
                ctx = share_context(self.session, aggregator, round_, owner, self.me)
                shares[owner] = masking.open_share(
                    self.keys.private, self.keys.require(owner), ctx, box
                )
            except masking.ShareError as exc:
                bad[owner] = f"share of {owner}'s self-mask for {self.me}: {exc}"
                continue
            holding.shares_revealed.add(owner)
        reply = {"v": wire.WIRE_VERSION, "status": "ok", "op": "unmask", "shares": shares}
        return wire.frame({**reply, "bad": bad})


def _common_fields(msg: dict[str, Any]) -> tuple[str, int, tuple[str, ...]]:
    op = msg.get("op")
    if msg.get("v") != wire.WIRE_VERSION or op not in ("masked", "seeds", "unmask"):
        raise _Refusal(f"unknown request {op!r}")
    return op, _int(msg, "round"), _peer_list(msg, "users")


def _int(msg: dict[str, Any], key: str) -> int:
    value = msg.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Refusal(f"{key} must be an integer, got {value!r}")
    return value


def _peer_list(msg: dict[str, Any], key: str) -> tuple[str, ...]:
    value = msg.get(key)
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise _Refusal(f"{key} must be a list of peer IDs")
    if len(set(value)) != len(value) or value != sorted(value):
        raise _Refusal(f"{key} must be sorted and without repeats")
    return tuple(value)


# -- the aggregator's side ---------------------------------------------------------------------


@dataclass(frozen=True)
class MaskedModel:
    """A member's answer to step 1, validated."""

    sender: str
    samples: int
    degree: int
    mass: int
    masked: np.ndarray
    sealed: dict[str, bytes]  # holder -> its sealed share of the sender's self-mask


class LateInput(SecAggError):
    """A masked model from a member already declared dropped: refused."""


@dataclass
class Aggregation:
    """One aggregation's bookkeeping at the aggregator: who sent a masked model, who is
    declared dropped, and the sum."""

    me: str
    session: str
    round: int
    users: tuple[str, ...]
    threshold: int
    length: int
    inputs: dict[str, MaskedModel] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)
    closed: bool = False
    pair_seeds: list[tuple[str, str, bytes]] = field(default_factory=list)

    @property
    def survivors(self) -> list[str]:
        return sorted(p for p in self.inputs if p not in self.dropped)

    @property
    def enough(self) -> int:
        """Survivors needed: every self-mask rebuilt from `threshold` shares of the others, and
        never fewer than two models in a sum (one would be revealed)."""
        return max(2, self.threshold + 1)

    def accept(self, model: MaskedModel) -> None:
        if model.sender in self.dropped or self.closed:
            raise LateInput(
                f"round {self.round}: masked model from {model.sender} after it was declared "
                "dropped: refused"
            )
        if model.sender not in self.users or model.masked.size != self.length:
            raise SecAggError(f"unexpected masked model from {model.sender}")
        self.inputs[model.sender] = model

    def close_inputs(self) -> list[str]:
        """The deadline passed: whoever sent nothing is dropped. Returns the newly dropped."""
        self.closed = True
        newly = [u for u in self.users if u not in self.inputs and u not in self.dropped]
        self.dropped.update(newly)
        return newly

    def drop(self, peers: Iterable[str]) -> None:
        """Survivors that did not answer step 2: their models leave the sum."""
        self.dropped.update(peers)

    def total(self, self_seeds: dict[str, bytes]) -> np.ndarray:
        """The weighted sum of the survivors' models, given each survivor's self-mask seed."""
        ring = MODEL_RING
        total = ring.zeros(self.length)
        for peer in self.survivors:
            total = ring.add(total, self.inputs[peer].masked)
            total = ring.sub(total, ring.mask(self_seeds[peer], self.length))
        total = masking.unmask_pairs(ring, total, self.pair_seeds)
        return ring.decode(total)


@dataclass
class SecureSum:
    """What an aggregation gives the merge: the weighted sum of the survivors' models (None if
    it could not be completed), each survivor's weight, why others are not in it, and the
    sample count each member that sent a masked model claimed."""

    total: np.ndarray | None
    weights: dict[str, float]
    failures: dict[str, str]
    samples: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Deadlines:
    fetch: float  # step 1: the masked models (they wait for the members' training)
    io: float  # steps 2 and 3: answers members have at hand
    connect: float


async def aggregate(
    exchange: ParamExchange,
    me: str,
    session: str,
    partners: Sequence[PeerInfo],
    round_: int,
    samples: int,
    degree: int,
    length: int,
    threshold_fraction: float,
    weight: WeightRule,
    deadlines: Deadlines,
    mass: int = 0,
) -> SecureSum:
    """Run one aggregation with `partners` for `round_`: steps 1 to 3 of the module's doc.
    `mass`: this node's closed-neighbourhood sample count (0 if unknown)."""
    by_peer = {p.peer_id.to_base58(): p for p in partners}
    users = tuple(sorted(by_peer))
    threshold = share_threshold(threshold_fraction, len(users))
    agg = Aggregation(me, session, round_, users, threshold, length)
    failures: dict[str, str] = {}
    if len(users) < 2:
        failures.update(
            {u: "secure aggregation needs at least 2 neighbours a round" for u in users}
        )
        return SecureSum(None, {}, failures)

    async def ask_masked(peer: str) -> None:
        request = {
            "op": "masked",
            "threshold": threshold,
            "samples": samples,
            "degree": degree,
            "mass": mass,
        }
        try:
            model = await _call(exchange, by_peer[peer], agg, request, deadlines.fetch, deadlines)
            agg.accept(model)
        except (PeerUnavailable, PeerMessageError) as exc:
            failures[peer] = _reason(exc)
        except LateInput as exc:
            failures[peer] = str(exc)

    async with trio.open_nursery() as nursery:
        for peer in users:
            nursery.start_soon(ask_masked, peer)
    newly = agg.close_inputs()
    while newly and len(agg.survivors) >= agg.enough:
        newly = await _reveal_seeds(exchange, by_peer, agg, newly, deadlines, failures)
    claimed = {p: m.samples for p, m in agg.inputs.items()}
    if len(agg.survivors) < agg.enough:
        why = f"secure aggregation aborted: {len(agg.survivors)} of {len(users)} neighbours "
        why += f"answered, {agg.enough} needed"
        failures.update({u: failures.get(u, why) for u in users})
        return SecureSum(None, {}, failures, claimed)
    self_seeds, problem = await _unmask(exchange, by_peer, agg, deadlines, failures)
    if problem is not None:
        failures.update({u: failures.get(u, problem) for u in users})
        return SecureSum(None, {}, failures, claimed)
    weights = {}
    for p in agg.survivors:
        them = agg.inputs[p]
        weights[p] = weight(samples, degree, mass, them.samples, them.degree, them.mass)
    return SecureSum(agg.total(self_seeds), weights, failures, claimed)


async def _reveal_seeds(
    exchange: ParamExchange,
    by_peer: dict[str, PeerInfo],
    agg: Aggregation,
    dropped: list[str],
    deadlines: Deadlines,
    failures: dict[str, str],
) -> list[str]:
    """Step 2: every survivor's pairwise seeds with the newly dropped. Returns the survivors
    that did not answer (now dropped too: their seeds are needed next)."""
    silent: list[str] = []

    async def ask(peer: str) -> None:
        try:
            seeds = await _call(
                exchange, by_peer[peer], agg, {"op": "seeds", "dropped": dropped}, deadlines.io,
                deadlines,
            )  # fmt: skip
        except (PeerUnavailable, PeerMessageError) as exc:
            failures[peer] = f"dropped in the seed step: {_reason(exc)}"
            silent.append(peer)
            return
        agg.pair_seeds += [(peer, d, seeds[d]) for d in dropped]

    async with trio.open_nursery() as nursery:
        for peer in agg.survivors:
            nursery.start_soon(ask, peer)
    agg.drop(silent)
    return sorted(silent)


async def _unmask(
    exchange: ParamExchange,
    by_peer: dict[str, PeerInfo],
    agg: Aggregation,
    deadlines: Deadlines,
    failures: dict[str, str],
) -> tuple[dict[str, bytes], str | None]:
    """Step 3: the survivors' self-mask seeds, rebuilt from their shares (or why not)."""
    survivors = agg.survivors
    shares: dict[str, list[bytes]] = {p: [] for p in survivors}
    bad: list[str] = []

    async def ask(holder: str) -> None:
        sealed = {o: agg.inputs[o].sealed[holder] for o in survivors if o != holder}
        request = {"op": "unmask", "survivors": survivors, "shares": sealed}
        try:
            opened, refused = await _call(exchange, by_peer[holder], agg, request, deadlines.io,
                                          deadlines)  # fmt: skip
        except (PeerUnavailable, PeerMessageError) as exc:
            failures.setdefault(holder, f"no shares in the unmask step: {_reason(exc)}")
            return
        for owner, share in opened.items():
            shares[owner].append(share)
        bad.extend(refused)

    # t + 1 holders give every survivor t shares of its self-mask (no holder holds its own);
    # the rest are asked only if some of those do not answer. Who goes first rotates.
    start = agg.round % len(survivors)
    queue = survivors[start:] + survivors[:start]
    first, rest = queue[: agg.threshold + 1], queue[agg.threshold + 1 :]
    for holders in (first, rest):
        async with trio.open_nursery() as nursery:
            for holder in holders:
                nursery.start_soon(ask, holder)
        if all(len(shares[o]) >= agg.threshold for o in survivors):
            break
    seeds = {}
    for owner in survivors:
        try:
            secret = masking.combine_shares(shares[owner], agg.threshold)
        except masking.MaskingError as exc:
            detail = "; ".join(bad) or "holders did not answer"
            return {}, f"cannot unmask {owner}'s model: {exc} ({detail})"
        seeds[owner] = masking.self_mask_seed(
            secret, self_context(agg.session, agg.me, agg.round, owner)
        )
    for problem in bad:
        log.warning("round %d: %s", agg.round, problem)
    return seeds, None


async def _call(
    exchange: ParamExchange,
    info: PeerInfo,
    agg: Aggregation,
    request: dict[str, Any],
    timeout: float,
    deadlines: Deadlines,
) -> Any:
    """One request of an aggregation to one member, its answer parsed for its step."""
    peer = info.peer_id.to_base58()
    op = request["op"]

    async def transact(stream: INetStream, deadline: float) -> Any:
        body = {
            "v": wire.WIRE_VERSION,
            "kind": KIND,
            "round": agg.round,
            "users": list(agg.users),
            **request,
        }
        if op == "masked":
            body["wait"] = exchange.server_wait(deadline)
        raw = await exchange.exchange_frames(stream, peer, wire.frame(body), wire.MAX_HEADER_BYTES)
        header = wire.unpack_map(raw, "secure aggregation answer", peer)
        wire.check_version(header, peer)
        status = header.get("status")
        if status == "refused":
            reason = str(header.get("reason", ""))[:MAX_REASON]
            raise PeerUnavailable(peer, f"refused secure aggregation ({op}): {reason}")
        if status == "not_ready":
            raise PeerUnavailable(peer, f"round {agg.round}: not_ready")
        if status != "ok" or header.get("op") != op:
            raise PeerMessageError(peer, "schema", f"bad {op} answer status {status!r}")
        if op == "masked":
            return await _read_masked(stream, peer, agg, header)
        if op == "seeds":
            return _parse_seeds(peer, header, request["dropped"])
        return _parse_unmask(peer, header, request["shares"])

    what = f"secure aggregation {op} of round {agg.round}"
    return await exchange.call(info, transact, timeout, deadlines.connect, what)


async def _read_masked(
    stream: INetStream, peer: str, agg: Aggregation, header: dict[str, Any]
) -> MaskedModel:
    if header.get("sender") != peer:
        raise PeerMessageError(
            peer, "identity", f"masked model claims sender {header.get('sender')}"
        )
    samples, degree, length, round_ = (
        _positive_int(header, key, peer) for key in ("samples", "degree", "length", "round")
    )
    mass = header.get("mass")
    if not isinstance(mass, int) or isinstance(mass, bool):
        raise PeerMessageError(peer, "schema", f"mass should be an int: {mass!r}")
    wire.check_mass(mass, samples, peer)
    if round_ != agg.round:
        raise PeerMessageError(peer, "round", f"masked model of round {round_}")
    if length != agg.length:
        raise PeerMessageError(
            peer, "shape", f"{length} masked values, the local model has {agg.length}"
        )
    sealed = header.get("shares")
    holders = set(agg.users) - {peer}
    if not isinstance(sealed, dict) or set(sealed) != holders:
        raise PeerMessageError(peer, "schema", "expected one sealed share per other member")
    if not all(isinstance(v, bytes) for v in sealed.values()):
        raise PeerMessageError(peer, "schema", "sealed shares must be bytes")
    payload = await read_exactly(stream, agg.length * MODEL_RING.element_bytes, peer)
    masked = MODEL_RING.from_bytes(payload, agg.length)
    return MaskedModel(peer, samples, degree, mass, masked, sealed)


def _positive_int(header: dict[str, Any], key: str, peer: str) -> int:
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PeerMessageError(peer, "schema", f"{key} should be a positive int: {value!r}")
    return value


def _parse_seeds(peer: str, header: dict[str, Any], dropped: list[str]) -> dict[str, bytes]:
    seeds = header.get("seeds")
    if not isinstance(seeds, dict) or set(seeds) != set(dropped):
        raise PeerMessageError(peer, "schema", "expected one seed per dropped member")
    if not all(isinstance(s, bytes) and len(s) == masking.SEED_BYTES for s in seeds.values()):
        raise PeerMessageError(peer, "schema", f"seeds must be {masking.SEED_BYTES} bytes")
    return seeds


def _parse_unmask(
    peer: str, header: dict[str, Any], asked: dict[str, bytes]
) -> tuple[dict[str, bytes], list[str]]:
    shares, bad = header.get("shares"), header.get("bad", {})
    if not isinstance(shares, dict) or not isinstance(bad, dict):
        raise PeerMessageError(peer, "schema", "shares and bad must be maps")
    if not set(shares) <= set(asked) or not all(isinstance(s, bytes) for s in shares.values()):
        raise PeerMessageError(peer, "schema", "shares of members that were not asked about")
    problems = [f"{peer}: {str(reason)[:MAX_REASON]}" for reason in bad.values()]
    return shares, problems


def _reason(exc: Exception) -> str:
    if isinstance(exc, PeerMessageError):
        return f"rejected ({exc.rule}): {exc.detail}"
    if isinstance(exc, PeerUnavailable):
        return exc.reason
    return str(exc)
