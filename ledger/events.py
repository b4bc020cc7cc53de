"""Reading the contract's logs: paged by block range (eth-tester's get_logs cost grows with
the span it scans) and decoded against the ABI into plain records."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode
from eth_utils import event_abi_to_log_topic, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3

from ledger.revert import _type_string

DEFAULT_PAGE = 2_000  # blocks per eth_getLogs request
# One position of an eth_getLogs topic filter: a value, any of several values, or anything.
Topic = bytes | Sequence[bytes] | None


def _topic_filter(topic: Topic) -> str | list[str] | None:
    if topic is None:
        return None
    if isinstance(topic, bytes | bytearray):
        return HexBytes(topic).to_0x_hex()
    return [HexBytes(t).to_0x_hex() for t in topic]


@dataclass(frozen=True)
class Event:
    name: str
    args: dict[str, Any]
    block_number: int
    log_index: int
    tx_hash: str

    @property
    def position(self) -> tuple[int, int]:
        return (self.block_number, self.log_index)


class EventDecoder:
    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._by_topic: dict[bytes, dict[str, Any]] = {}
        self._topic_by_name: dict[str, bytes] = {}
        for item in abi:
            if item.get("type") == "event":
                topic = bytes(event_abi_to_log_topic(item))  # type: ignore[arg-type]
                self._by_topic[topic] = item
                self._topic_by_name[item["name"]] = topic

    def topic(self, name: str) -> bytes:
        return self._topic_by_name[name]

    def decode(self, log: Any) -> Event | None:
        topics = [bytes(t) for t in log["topics"]]
        if not topics or topics[0] not in self._by_topic:
            return None
        abi = self._by_topic[topics[0]]
        indexed = [p for p in abi["inputs"] if p["indexed"]]
        plain = [p for p in abi["inputs"] if not p["indexed"]]
        args: dict[str, Any] = {}
        for param, topic in zip(indexed, topics[1:], strict=True):
            (args[param["name"]],) = decode([_type_string(param)], topic)
        values = decode([_type_string(p) for p in plain], bytes(log["data"]))
        args.update(zip((p["name"] for p in plain), values, strict=True))
        for key, value in args.items():
            if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
                args[key] = to_checksum_address(value)
        return Event(
            name=abi["name"],
            args=args,
            block_number=int(log["blockNumber"]),
            log_index=int(log["logIndex"]),
            tx_hash=HexBytes(log["transactionHash"]).to_0x_hex(),
        )


def iter_logs(
    w3: Web3,
    address: str,
    from_block: int,
    to_block: int,
    topics: Sequence[Topic] | None = None,
    page: int = DEFAULT_PAGE,
) -> Iterator[Any]:
    """Raw logs of `address` in [from_block, to_block], in chain order, `page` blocks a call."""
    start = from_block
    while start <= to_block:
        end = min(start + page - 1, to_block)
        params: dict[str, Any] = {"address": address, "fromBlock": start, "toBlock": end}
        if topics is not None:
            params["topics"] = [_topic_filter(t) for t in topics]
        yield from w3.eth.get_logs(params)  # type: ignore[arg-type]
        start = end + 1


def read_events(
    w3: Web3,
    decoder: EventDecoder,
    address: str,
    from_block: int,
    to_block: int | None = None,
    topics: Sequence[Topic] | None = None,
    page: int = DEFAULT_PAGE,
) -> list[Event]:
    last = w3.eth.block_number if to_block is None else to_block
    events = []
    for log in iter_logs(w3, address, from_block, last, topics, page):
        event = decoder.decode(log)
        if event is not None:
            events.append(event)
    events.sort(key=lambda e: e.position)
    return events
