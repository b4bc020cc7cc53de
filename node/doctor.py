"""`medswarm node doctor`: check a hospital node's set-up before it runs, in the order a new
member meets the problems, and say for each what is wrong and how to fix it.

1. config: the file parses and validates (unknown keys, wrong types, missing files);
2. data: the records and the consortium's schema give a clean table (a dry cleaning report,
   nothing written);
3. keys: the identity, X25519 and Ethereum key files are the owner's only (0600) and readable
   (an encrypted keystore unlocks with $MEDSWARM_KEY_PASSWORD);
4. chain (with the ledger on): reachable, the contract's code at its address, this account an
   active member registered with this node's peer ID, and some ETH for its writes' gas;
5. each neighbour: it answers a dial within the timeout and speaks the parameter protocol.

Nothing is sent to the chain, and nothing but a protocol negotiation to the neighbours: the
neighbour checks dial from a throwaway libp2p identity, so that a node already running with
this config keeps its connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from node.config import NodeConfig, load_config
from node.errors import NodeError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from ledger.contract import Ledger

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Check:
    """One finding: which check (`area`: config, data, keys, chain, neighbour), whether it
    passed, what was found and, when it did not pass, how to fix it. `skipped`: it could not
    run because an earlier check failed or the config turns it off."""

    area: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False


def doctor(
    config: Path, overrides: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[Check]:
    """Every check of the node config at `config`, in order, each as soon as it is done."""
    try:
        cfg = load_config(config, overrides)
    except NodeError as exc:
        yield Check(
            "config",
            False,
            str(exc),
            "correct the keys named above in the config (every key is commented in the file "
            "`medswarm node init` writes)",
        )
        return
    yield Check("config", True, f"{cfg.source} (node {cfg.node.name})")
    yield _data(cfg)
    keys = list(_keys(cfg))
    yield from keys
    keys_ok = all(k.ok for k in keys)
    yield from _chain(cfg, timeout, keys_ok)
    yield from _neighbours(cfg, timeout)


# -- data --------------------------------------------------------------------------------------


def _data(cfg: NodeConfig) -> Check:
    from node.dataset import load_schema, load_table, load_test_set

    try:
        schema = load_schema(cfg.data.schema_file)
        table = load_table(cfg.data.path, schema)
        extra = ""
        if cfg.data.test_path is not None:
            test = load_test_set(cfg.data.test_path, schema)
            extra = f"; test set {cfg.data.test_path.name}: {test.report.rows_out} rows"
    except NodeError as exc:
        return Check(
            "data",
            False,
            str(exc),
            "fix the file, column or rule named above (in the records, or data.path / "
            "data.schema in the config); the schema is the consortium's: ask before changing it",
        )
    report = table.report
    if report.rows_out < 2:
        return Check(
            "data",
            False,
            f"{cfg.data.path}: {report.rows_out} of {report.rows_in} rows left after cleaning "
            f"({report.summary()})",
            "check that the records are in the schema's columns and units: cleaning dropped "
            "almost everything",
        )
    return Check(
        "data",
        True,
        f"{cfg.data.path.name}: {report.rows_in} rows in, {report.rows_out} kept ("
        f"{report.summary()}){extra}",
    )


# -- keys --------------------------------------------------------------------------------------


def _keys(cfg: NodeConfig) -> Iterator[Check]:
    from gossip.errors import IdentityError
    from gossip.identity import load_key_file, load_x25519_key_file, peer_id_of

    try:
        peer = peer_id_of(load_key_file(cfg.node.key_file))
        yield Check("keys", True, f"identity {cfg.node.key_file} (mode 600, peer ID {peer})")
    except IdentityError as exc:
        yield Check("keys", False, str(exc), _key_fix(cfg.node.key_file, "medswarm node init"))
    if cfg.node.x25519_key_file is not None:
        try:
            load_x25519_key_file(cfg.node.x25519_key_file)
            yield Check("keys", True, f"X25519 masking key {cfg.node.x25519_key_file} (mode 600)")
        except IdentityError as exc:
            fix = _key_fix(cfg.node.x25519_key_file, "medswarm node init")
            yield Check("keys", False, str(exc), fix)
    if cfg.ledger.enabled:
        yield _eth_key(cfg)


def _key_fix(path: Path, maker: str) -> str:
    if path.exists():
        return f"chmod 600 {path} (and chown it to the user the node runs as)"
    return f"point the config at the key file, or make one ({maker}); keys are never copied"


def _eth_key(cfg: NodeConfig) -> Check:
    from ledger.accounts import KEY_ENV, PASSWORD_ENV
    from ledger.errors import KeyFileError

    path = cfg.ledger.key_file
    try:
        account = _account(cfg)
    except KeyFileError as exc:
        text = str(exc)
        if "too open" in text and path is not None:
            fix = _key_fix(path, "medswarm ledger new-key")
        elif "password" in text:
            fix = f"set ${PASSWORD_ENV} to the keystore's password in the node's environment"
        else:
            fix = "give ledger.key_file the hospital's key (`medswarm ledger new-key FILE`)"
        return Check("keys", False, text, fix)
    if account is None:
        return Check(
            "keys",
            False,
            f"ledger.enabled is true but there is no Ethereum key: no ledger.key_file and no "
            f"${KEY_ENV}",
            "make one with `medswarm ledger new-key keys/eth.key` and set ledger.key_file",
        )
    where = f"{path} (mode 600)" if path is not None else f"${KEY_ENV}"
    return Check("keys", True, f"Ethereum account {account.address} from {where}")


def _account(cfg: NodeConfig) -> LocalAccount | None:
    """The node's Ethereum account, as `node run` will load it."""
    from ledger.accounts import load_key_env, load_key_file

    if cfg.ledger.key_file is not None:
        return load_key_file(cfg.ledger.key_file)
    return load_key_env()


# -- chain -------------------------------------------------------------------------------------


def _chain(cfg: NodeConfig, timeout: float, keys_ok: bool) -> Iterator[Check]:
    if not cfg.ledger.enabled:
        yield Check("chain", True, "ledger.enabled is false: no chain to check", skipped=True)
        return
    from ledger.backends.rpc import connect_rpc
    from ledger.contract import Ledger

    url, address = cfg.ledger.chain, cfg.ledger.contract
    if not url.startswith(("http://", "https://")):
        yield Check(
            "chain",
            False,
            f"ledger.chain = {url!r} is not a JSON-RPC URL",
            "set ledger.chain to the consortium chain's http(s):// URL",
        )
        return
    chain = connect_rpc(url, timeout=timeout)
    try:
        chain_id, block = chain.w3.eth.chain_id, chain.w3.eth.block_number
    except Exception as exc:  # requests, web3 and socket errors alike: the chain is not there
        yield Check(
            "chain",
            False,
            f"cannot reach the chain at {url}: {_short(exc)}",
            "check ledger.chain against the URL the consortium gave you, that the chain is up, "
            "and that this machine (its firewall, proxy) may reach it",
        )
        return
    yield Check("chain", True, f"{url} answers: chain id {chain_id}, block {block}")
    if not chain.w3.eth.get_code(chain.w3.to_checksum_address(address)):
        yield Check(
            "chain",
            False,
            f"no contract at {address} on chain {chain_id}",
            "check ledger.contract against the address the consortium gave you (and "
            "ledger.chain: it may be another chain)",
        )
        return
    try:
        ledger = Ledger(chain, address)
        rounds = ledger.state().rounds_per_epoch
    except Exception as exc:  # reverts, undecodable answers: another contract's code
        yield Check(
            "chain",
            False,
            f"the contract at {address} is not the consortium's: {exc}",
            "check ledger.contract against the address the consortium gave you",
        )
        return
    yield Check("chain", True, f"consortium contract at {address} ({rounds} rounds an epoch)")
    if not keys_ok:
        yield Check(
            "chain", False, "membership not checked: fix the keys first", "see keys above", True
        )
        return
    yield _membership(cfg, ledger)


def _membership(cfg: NodeConfig, ledger: Ledger) -> Check:
    from gossip.identity import load_key_file, peer_id_of

    account = _account(cfg)
    assert account is not None  # the keys check passed
    peer = peer_id_of(load_key_file(cfg.node.key_file))
    me = ledger.member(account.address)
    register = (
        f"send the consortium your address {account.address} and peer ID {peer}; an admin "
        f"runs: medswarm ledger register --contract {ledger.address} --member "
        f"{account.address} --peer-id {peer} --name {cfg.node.name} --fund 0.1ether"
    )
    if me is None:
        holder = ledger.member_by_peer_id(peer)
        also = f" (peer ID {peer} is registered to account {holder.address})" if holder else ""
        return Check(
            "chain",
            False,
            f"account {account.address} is not registered in the consortium{also}",
            register if holder is None else "use that account's key file in ledger.key_file",
        )
    if not me.active:
        return Check(
            "chain",
            False,
            f"account {account.address} is deactivated in the consortium",
            f"ask an admin to reactivate it: {register.split('; an admin runs: ')[1]}",
        )
    if me.peer_id != peer:
        return Check(
            "chain",
            False,
            f"account {account.address} is registered with peer ID {me.peer_id}, but this "
            f"node's identity ({cfg.node.key_file}) is {peer}",
            "use the identity key that was registered in node.key_file, or ask an admin to "
            f"register peer ID {peer} for this account",
        )
    balance = ledger.chain.w3.eth.get_balance(account.address)
    if balance == 0:
        return Check(
            "chain",
            False,
            f"account {account.address} is a member but has no ETH to pay for its writes' gas",
            f"ask an admin to fund it: medswarm ledger register ... --fund 0.1ether, or send "
            f"ETH to {account.address}",
        )
    return Check(
        "chain",
        True,
        f"{cfg.node.name} is an active member: account {account.address}, peer ID {peer}, "
        f"balance {balance / 10**18:.4g} ETH",
    )


# -- neighbours --------------------------------------------------------------------------------


def _neighbours(cfg: NodeConfig, timeout: float) -> Iterator[Check]:
    if not cfg.node.neighbours:
        yield Check(
            "neighbour",
            False,
            "node.neighbours is empty: this node would train alone",
            "add each neighbour's full multiaddr (/ip4/ADDRESS/tcp/PORT/p2p/PEER_ID) from the "
            "consortium",
        )
        return
    import trio

    yield from trio.run(check_neighbours, cfg.node.neighbours, timeout)


async def check_neighbours(addresses: list[str], timeout: float) -> list[Check]:
    """Dial each neighbour (at once, each within `timeout`) from a throwaway identity and
    negotiate the parameter protocol with it; one Check each, in the order given."""
    import multiaddr
    import trio
    from libp2p.crypto.ed25519 import create_new_key_pair

    from gossip.host import build_host, close_host

    results: list[Check | None] = [None] * len(addresses)
    host = build_host(create_new_key_pair())
    try:
        listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
        async with host.run([listen]), trio.open_nursery() as nursery:
            for i, addr in enumerate(addresses):

                async def one(i: int = i, addr: str = addr) -> None:
                    results[i] = await _neighbour(host, addr, timeout)

                nursery.start_soon(one)
    finally:
        await close_host(host)
    return [r for r in results if r is not None]


async def _neighbour(host: object, addr: str, timeout: float) -> Check:
    import trio
    from libp2p.abc import IHost

    from gossip.errors import GossipError, PeerUnavailable
    from gossip.exchange import PROTOCOL
    from gossip.host import ensure_connected, parse_peer_addr

    assert isinstance(host, IHost)
    try:
        info = parse_peer_addr(addr)
    except GossipError as exc:
        return Check(
            "neighbour",
            False,
            str(exc),
            "copy the neighbour's full multiaddr from the consortium, /p2p/ part included",
        )
    reach = (
        f"check that the neighbour's node is running, that {addr} is its current address "
        "and port, and that the firewalls on both sides pass that TCP port"
    )
    try:
        await ensure_connected(host, info, timeout)
    except PeerUnavailable as exc:
        if "timed out" in exc.reason:
            what = f"no answer within {timeout:g} s"
        elif "no addresses established" in exc.reason:  # py-libp2p's word for refused
            what = "nothing accepts the connection there (refused or unreachable)"
        else:
            what = _short_text(exc.reason)
        return Check("neighbour", False, f"{addr}: {what}", reach)
    try:
        with trio.fail_after(timeout):
            stream = await host.new_stream(info.peer_id, [PROTOCOL])
        await stream.reset()
    except trio.TooSlowError:
        return Check(
            "neighbour", False, f"{addr}: connected, but no protocol answer within {timeout:g} s",
            reach,
        )  # fmt: skip
    except Exception as exc:  # libp2p's negotiation failures come in several types
        cause = exc.__cause__ or exc
        return Check(
            "neighbour",
            False,
            f"{addr}: answers libp2p but not {PROTOCOL} ({_short_text(str(cause))})",
            "the peer at that address is not a medswarm node of this version: check the "
            "address and port with the consortium",
        )
    return Check("neighbour", True, f"{addr}: reachable, speaks {PROTOCOL}")


def _short(exc: BaseException) -> str:
    return _short_text(f"{type(exc).__name__}: {exc}")


def _short_text(text: str, limit: int = 240) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
