"""`Ledger`: the Python API over the Consortium contract on any backend.

Writes return a TxResult or raise LedgerRevert (the contract's custom error, decoded) or
ChainUnavailable (transport failure: retry later). Reads return frozen dataclasses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

from eth_abi import decode, encode
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, is_hex_address, to_checksum_address
from web3.contract import Contract
from web3.types import TxParams

from ledger.artifacts import Artifact, load_artifact
from ledger.backends.base import Chain
from ledger.commitments import commitments_in, encode_commitments
from ledger.errors import LedgerError
from ledger.events import Event, EventDecoder, read_events
from ledger.privacy import (
    NO_PRIVACY,
    check_fixed,
    delta_to_fixed,
    epsilon_from_fixed,
    epsilon_to_fixed,
)
from ledger.revert import ErrorDecoder, _type_string
from ledger.scores import decode_entries, encode_entries, to_fixed
from ledger.tx import Sender, TxResult, transport_guard
from ledger.views import (
    Commitment,
    EpochResult,
    Evaluation,
    LedgerState,
    MemberInfo,
    PrivacySpend,
    Report,
)

CONTRACT_NAME = "Consortium"
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclass(frozen=True)
class _Function:
    selector: bytes
    inputs: list[str]
    outputs: list[str]


def _functions(abi: list[dict[str, Any]]) -> dict[str, _Function]:
    """Encoders for the ABI's functions: web3's per-call ABI lookup costs ~10 ms a call, which
    dominates an audit's thousands of view calls."""
    found = {}
    for item in abi:
        if item.get("type") == "function":
            inputs = [_type_string(p) for p in item["inputs"]]
            signature = f"{item['name']}({','.join(inputs)})"
            found[item["name"]] = _Function(
                function_signature_to_4byte_selector(signature),
                inputs,
                [_type_string(p) for p in item["outputs"]],
            )
    return found


@dataclass(frozen=True)
class DeployConfig:
    max_members: int = 16
    rounds_per_epoch: int = 10
    min_reports: int = 2
    grace_rounds: int = 1
    reward_per_epoch: int = 10**18  # wei
    close_timeout: int = 7 * 24 * 3600  # seconds before an admin may close a stalled epoch
    admins: tuple[str, ...] = ()  # empty: the deployer alone


class Ledger:
    """One contract on one chain, acting as one account (read-only without an account)."""

    def __init__(
        self,
        chain: Chain,
        address: str,
        account: LocalAccount | None = None,
        artifact: Artifact | None = None,
    ) -> None:
        self.chain = chain
        self.artifact = artifact or load_artifact(CONTRACT_NAME)
        self.address = to_checksum_address(address)
        self.contract: Contract = chain.w3.eth.contract(address=self.address, abi=self.artifact.abi)
        self.errors = ErrorDecoder(self.artifact.abi)
        self.events = EventDecoder(self.artifact.abi)
        self._functions = _functions(self.artifact.abi)
        self.account = account
        self._sender = (
            Sender(chain.w3, account, self.errors, chain.name) if account is not None else None
        )
        self._index_to_address: dict[int, str] = {}

    # ----- construction -------------------------------------------------------------------

    @classmethod
    def deploy(
        cls, chain: Chain, account: LocalAccount, config: DeployConfig | None = None
    ) -> Ledger:
        config = config or DeployConfig()
        artifact = load_artifact(CONTRACT_NAME)
        admins = list(config.admins) or [account.address]
        factory = chain.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        data = factory.constructor(
            admins,
            config.max_members,
            config.rounds_per_epoch,
            config.min_reports,
            config.grace_rounds,
            config.reward_per_epoch,
            config.close_timeout,
        ).data_in_transaction
        sender = Sender(chain.w3, account, ErrorDecoder(artifact.abi), chain.name)
        result = sender.send(None, data, description={"function": "constructor"})
        assert result.contract_address is not None
        ledger = cls(chain, result.contract_address, account, artifact)
        ledger._sender = sender
        return ledger

    def as_account(self, account: LocalAccount) -> Ledger:
        """The same contract, sending as `account`."""
        return Ledger(self.chain, self.address, account, self.artifact)

    @property
    def sender_address(self) -> str:
        if self.account is None:
            raise LedgerError("this Ledger has no account: read-only")
        return str(self.account.address)

    # ----- writes -------------------------------------------------------------------------

    def _transact(self, fn: str, *args: Any, value: int = 0) -> TxResult:
        if self._sender is None:
            raise LedgerError(f"{fn}: this Ledger has no account (read-only)")
        data = self._encode(fn, args)
        return self._sender.send(
            self.address, data, value=value, description={"function": fn, "args": args}
        )

    def register(self, member: str, peer_id: str, name: str) -> TxResult:
        return self._transact("register", to_checksum_address(member), peer_id, name)

    def deactivate(self, member: str) -> TxResult:
        return self._transact("deactivate", to_checksum_address(member))

    def set_admin(self, account: str, enabled: bool) -> TxResult:
        return self._transact("setAdmin", to_checksum_address(account), enabled)

    def set_max_members(self, max_members: int) -> TxResult:
        return self._transact("setMaxMembers", max_members)

    def set_reward_per_epoch(self, wei: int) -> TxResult:
        return self._transact("setRewardPerEpoch", wei)

    def set_max_epsilon(self, epsilon: float | None) -> TxResult:
        """The consortium's privacy budget per member; None removes the maximum."""
        if epsilon is None:
            return self._transact("setMaxEpsilon", 0)
        fixed = epsilon_to_fixed(epsilon)
        if fixed in (0, NO_PRIVACY):  # on chain 0 means "no maximum"
            raise LedgerError(f"a maximum epsilon is positive and finite, got {epsilon}")
        return self._transact("setMaxEpsilon", fixed)

    def set_x25519_key(self, key: bytes) -> TxResult:
        """Register (or rotate) this member's own X25519 public key (32 raw bytes)."""
        if not isinstance(key, bytes | bytearray) or len(key) != 32:
            size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
            raise LedgerError(f"an X25519 public key is 32 raw bytes, got {size}")
        return self._transact("setX25519Key", bytes(key))

    def commit(self, round: int, digest: bytes, samples: int) -> TxResult:
        """Commit the sha256 `digest` of this member's model for `round`."""
        return self._transact("commit", round, _digest(digest), samples)

    def commit_batch(self, items: Sequence[Commitment]) -> TxResult:
        """Several commitments in one tx, logged as one ModelsCommitted event."""
        return self._transact("commitBatch", _packed(items))

    def report(
        self,
        epoch: int,
        scores: Mapping[str, float],
        epsilon: float | None = None,
        delta: float | None = None,
    ) -> TxResult:
        """Report `epoch`'s scores, keyed by peer ID or address (scores as floats; possibly
        none), with this member's cumulative privacy spend (epsilon None: no DP)."""
        return self.report_fixed(
            epoch, self.fixed_scores(scores), epsilon_to_fixed(epsilon), delta_to_fixed(delta)
        )

    def report_fixed(
        self, epoch: int, scores: Mapping[int, int], epsilon: int = NO_PRIVACY, delta: int = 0
    ) -> TxResult:
        """Report fixed-point scores (score * 1e6) keyed by member index, and the privacy
        spend in fixed point (ledger.privacy: micro-epsilon, delta in 1e-18)."""
        check_fixed(epsilon, delta)
        return self._transact("report", epoch, encode_entries(scores), epsilon, delta)

    def commit_and_report(
        self,
        items: Sequence[Commitment],
        epoch: int,
        scores: Mapping[int, int],
        epsilon: int = NO_PRIVACY,
        delta: int = 0,
    ) -> TxResult:
        """An epoch's commitments and its report (fixed scores by member index, fixed-point
        privacy spend as in report_fixed) in one tx."""
        check_fixed(epsilon, delta)
        return self._transact(
            "commitAndReport", _packed(items), epoch, encode_entries(scores), epsilon, delta
        )

    def commit_evaluation(self, digest: bytes) -> TxResult:
        """Commit the sha256 `digest` of this member's cross-site evaluation row."""
        return self._transact("commitEvaluation", _digest(digest, "an evaluation digest"))

    def fixed_scores(self, scores: Mapping[str, float]) -> dict[int, int]:
        """{peer ID or address: float score} -> {member index: fixed-point score}."""
        return {self.index_of(k): to_fixed(v) for k, v in scores.items()}

    def finalize(self, epoch: int, *, wait_for_reports: bool = True) -> TxResult:
        """Finalize `epoch`, supplying its reports from the chain's events and, sorted here,
        the two middle scores about each member (which the contract checks, not sorts).

        The contract waits for every active member's report (ReportsMissing) unless most
        members reached the window's end; `wait_for_reports=False` is an admin's decision
        not to wait (adminFinalize), e.g. after a run, when no more reports are coming."""
        found = self.reports(epoch)
        reports = [(r.reporter, r.entries) for r in found]
        members = self.members()
        active = {m.address for m in members if m.active}
        about: list[list[int]] = [[] for _ in members]
        for r in found:
            if to_checksum_address(r.reporter) in active:
                for subject, score in decode_entries(r.entries).items():
                    about[subject].append(score)
        function = "finalize" if wait_for_reports else "adminFinalize"
        return self._transact(function, epoch, reports, finalize_middles(about))

    def close_epoch(self, epoch: int) -> TxResult:
        """As an admin, close a stalled `epoch` (no scores, no reward) after the timeout."""
        return self._transact("closeEpoch", epoch)

    def closable_at(self) -> int:
        """The time (unix seconds) from which an admin may close the first unfinalized epoch."""
        return int(self._call("epochOpenedAt")) + int(self._call("closeTimeout"))

    def fund(self, wei: int) -> TxResult:
        return self._transact("fund", value=wei)

    def withdraw(self) -> TxResult:
        return self._transact("withdraw")

    def send_value(self, to: str, wei: int) -> TxResult:
        """A plain transfer of `wei` from this Ledger's account to `to` (not the contract): e.g.
        an admin giving a new member the gas its writes cost."""
        if self._sender is None:
            raise LedgerError("send_value: this Ledger has no account (read-only)")
        return self._sender.send(
            to_checksum_address(to), "0x", value=wei, description={"function": "transfer"}
        )

    # ----- reads --------------------------------------------------------------------------

    def _encode(self, fn: str, args: tuple[Any, ...]) -> str:
        f = self._functions[fn]
        return "0x" + (f.selector + encode(f.inputs, list(args))).hex()

    def _call(self, fn: str, *args: Any) -> Any:
        """A view call; one return value as itself, several as a tuple."""
        params = cast(TxParams, {"to": self.address, "data": self._encode(fn, args)})
        raw = transport_guard(self.chain.name, lambda: self._eth_call(fn, params))
        values = decode(self._functions[fn].outputs, bytes(raw))
        return values[0] if len(values) == 1 else tuple(values)

    def _eth_call(self, fn: str, params: TxParams) -> bytes:
        if self.chain.name == "embedded":  # eth-tester needs web3's request formatting
            return bytes(self.chain.w3.eth.call(params))
        # Straight to the provider: web3's eth.call adds ~10 ms of formatting per call.
        response = self.chain.w3.provider.make_request("eth_call", [params, "latest"])  # type: ignore[arg-type]
        if "error" in response:
            raise LedgerError(f"eth_call {fn}: {response['error']}")
        return bytes.fromhex(str(response["result"]).removeprefix("0x"))

    @cached_property
    def _constants(self) -> tuple[int, int, int, int]:
        return (
            self._call("roundsPerEpoch"),
            self._call("graceRounds"),
            self._call("minReports"),
            self._call("deployedAt"),
        )

    @property
    def deployed_at(self) -> int:
        return self._constants[3]

    def round_limit(self) -> int:
        """Commitments take rounds below this: (next epoch + 2) * rounds per epoch + grace."""
        return int(self._call("roundLimit"))

    def state(self) -> LedgerState:
        count, max_members, admins, next_epoch, reward, pool, max_epsilon = self._call("state")
        rounds, grace, min_reports, deployed = self._constants
        balance = transport_guard(
            self.chain.name, lambda: self.chain.w3.eth.get_balance(self.address)
        )
        return LedgerState(
            address=self.address,
            member_count=count,
            max_members=max_members,
            admin_count=admins,
            next_epoch=next_epoch,
            reward_per_epoch=reward,
            pool=pool,
            total_owed=self._call("totalOwed"),
            balance=balance,
            rounds_per_epoch=rounds,
            grace_rounds=grace,
            min_reports=min_reports,
            deployed_at=deployed,
            max_epsilon=epsilon_from_fixed(max_epsilon) if max_epsilon else None,
        )

    def member(self, address: str) -> MemberInfo | None:
        """The member at `address`, or None if it was never registered."""
        address = to_checksum_address(address)
        known, active, index, next_round, next_epoch, owed, paid, peer_id, key = self._call(
            "member", address
        )
        if not known:
            return None
        x25519 = bytes(key) if any(key) else None
        return MemberInfo(
            address, index, active, peer_id, next_round, next_epoch, owed, paid, x25519
        )

    def members(self) -> list[MemberInfo]:
        """Every member ever registered (active or not), by index."""
        count = self._call("state")[0]
        found = []
        for index in range(count):
            info = self.member(self.member_address(index))
            assert info is not None
            found.append(info)
        return found

    def member_address(self, index: int) -> str:
        if index not in self._index_to_address:  # indexes never change: cache
            self._index_to_address[index] = to_checksum_address(self._call("memberAt", index))
        return self._index_to_address[index]

    def member_by_peer_id(self, peer_id: str) -> MemberInfo | None:
        address = self._call("memberByPeerId", peer_id)
        if int(address, 16) == 0:
            return None
        return self.member(address)

    def is_active_member(self, who: str) -> bool:
        """True if `who` (an address or a libp2p peer ID) is an active member."""
        if _ADDRESS_RE.match(who):
            return bool(self._call("isActiveMember", to_checksum_address(who)))
        info = self.member_by_peer_id(who)
        return info is not None and info.active

    def index_of(self, who: str) -> int:
        info = self.member(who) if is_hex_address(who) else self.member_by_peer_id(who)
        if info is None:
            raise LedgerError(f"{who} is not a registered member")
        return info.index

    def is_admin(self, address: str) -> bool:
        return bool(self._call("isAdmin", to_checksum_address(address)))

    def committed(self, member: str, round: int) -> bool:
        return bool(self._call("committed", to_checksum_address(member), round))

    def committed_word(self, member: str, word: int) -> int:
        return int(self._call("committedWord", to_checksum_address(member), word))

    def epoch_result(self, epoch: int, next_epoch: int | None = None) -> EpochResult:
        """`next_epoch` (from state()) saves a call when reading many epochs."""
        results_hash, reward, allocated = self._call("epochResult", epoch)
        if next_epoch is None:
            next_epoch = self._call("state")[3]
        return EpochResult(
            epoch=epoch,
            finalized=epoch < next_epoch,
            reports_hash=bytes(self._call("reportsHash", epoch)),
            results_hash=bytes(results_hash),
            reward=reward,
            allocated=allocated,
        )

    def reports(self, epoch: int) -> list[Report]:
        """The epoch's ScoresReported events in log order (what finalize must be given)."""
        topic = self.events.topic("ScoresReported")
        epoch_topic = epoch.to_bytes(32, "big")
        found = transport_guard(
            self.chain.name,
            lambda: read_events(
                self.chain.w3, self.events, self.address, self.deployed_at, None,
                topics=[topic, epoch_topic],
            ),
        )  # fmt: skip
        return [
            Report(epoch, e.args["reporter"], e.args["entries"], e.block_number, e.log_index)
            for e in found
        ]

    def commitments(self, member: str | None = None) -> list[tuple[str, Commitment, Event]]:
        """Every commitment logged (by `member`, or by anyone), in chain order: (member,
        commitment, the ModelCommitted or ModelsCommitted event that logged it)."""

        def read(topics: list[bytes | None]) -> list[Event]:
            return transport_guard(
                self.chain.name,
                lambda: read_events(
                    self.chain.w3, self.events, self.address, self.deployed_at, None, topics=topics
                ),
            )

        found: list[Event] = []
        for name in ("ModelCommitted", "ModelsCommitted"):
            topics: list[bytes | None] = [self.events.topic(name)]
            if member is not None:  # ModelCommitted: (round, member); ModelsCommitted: (member)
                who = bytes(12) + bytes.fromhex(to_checksum_address(member)[2:])
                topics += [None, who] if name == "ModelCommitted" else [who]
            found += read(topics)
        found.sort(key=lambda e: e.position)
        return [(who, c, e) for e in found for who, c in commitments_in(e)]

    def privacy_spent(self, member: str | None = None) -> list[PrivacySpend]:
        """Every PrivacySpent event (of `member`, or of everyone), in chain order."""
        topics: list[bytes | None] = [self.events.topic("PrivacySpent")]
        if member is not None:  # topics: (epoch, member)
            topics += [None, bytes(12) + bytes.fromhex(to_checksum_address(member)[2:])]
        found = transport_guard(
            self.chain.name,
            lambda: read_events(
                self.chain.w3, self.events, self.address, self.deployed_at, None, topics=topics
            ),
        )
        return [privacy_spend(e) for e in found]

    def evaluations(self, member: str | None = None) -> list[Evaluation]:
        """Every EvaluationCommitted event (of `member`, or of everyone), in chain order."""
        topics: list[bytes | None] = [self.events.topic("EvaluationCommitted")]
        if member is not None:  # topics: (member)
            topics.append(bytes(12) + bytes.fromhex(to_checksum_address(member)[2:]))
        found = transport_guard(
            self.chain.name,
            lambda: read_events(
                self.chain.w3, self.events, self.address, self.deployed_at, None, topics=topics
            ),
        )
        return [
            Evaluation(e.args["member"], bytes(e.args["digest"]), e.block_number, e.tx_hash)
            for e in found
        ]

    def evaluation_of(self, member: str) -> bytes | None:
        """The member's latest committed evaluation digest (None: none yet)."""
        digest = bytes(self._call("evaluationOf", to_checksum_address(member)))
        return digest if any(digest) else None

    def split_reward(self, reward: int, scores: Iterable[int]) -> list[int]:
        """The contract's own split rule, evaluated on chain (a pure call)."""
        return list(self._call("splitReward", reward, list(scores)))

    def median(self, values: Iterable[int]) -> int:
        return int(self._call("median", list(values)))


def finalize_middles(about: Sequence[Sequence[int]]) -> list[int]:
    """finalize's `middles`: per member index, the ((n - 1) // 2)-th and (n // 2)-th smallest
    of the scores about it (equal for an odd count; 0, 0 for none)."""
    middles: list[int] = []
    for scores in about:
        ordered = sorted(scores)
        n = len(ordered)
        middles += [ordered[(n - 1) // 2], ordered[n // 2]] if n else [0, 0]
    return middles


def privacy_spend(event: Event) -> PrivacySpend:
    a = event.args
    return PrivacySpend(
        a["epoch"], a["member"], a["epsilon"], a["delta"], event.block_number, event.tx_hash
    )


def _packed(items: Sequence[Commitment]) -> bytes:
    return encode_commitments([Commitment(c.round, _digest(c.digest), c.samples) for c in items])


def _digest(digest: bytes | str, what: str = "a model digest") -> bytes:
    raw = bytes.fromhex(digest.removeprefix("0x")) if isinstance(digest, str) else bytes(digest)
    if len(raw) != 32:
        raise LedgerError(f"{what} is 32 bytes (sha256), got {len(raw)}")
    return raw
