"""Onboarding a hospital on a real Anvil, as docs/hospital-node.md walks through it: `node init`,
`ledger new-key` (an encrypted keystore), `node doctor` before and after the consortium's
`ledger register --fund`; and the doctor finding each problem a new member meets: a key file
others can read, a chain it cannot reach, a peer ID nobody registered, neighbours that do not
answer or do not speak medswarm."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomlkit
from libp2p.crypto.ed25519 import create_new_key_pair
from typer.testing import CliRunner, Result

from gossip.exchange import PROTOCOL
from gossip.identity import create_key_file, peer_id_of
from ledger.accounts import PASSWORD_ENV, dev_account
from ledger.backends import Chain, connect
from ledger.contract import Ledger
from medswarm.cli import app
from sim.local_swarm import HEART_DISEASE, REPO_ROOT, free_port

pytestmark = pytest.mark.integration
runner = CliRunner()
PASSWORD = "a long hospital passphrase"
ENV = {PASSWORD_ENV: PASSWORD, "COLUMNS": "250"}

# Two libp2p hosts in a child process: a medswarm node's parameter protocol on the first, none on
# the second. Each prints its full multiaddr.
NEIGHBOURS = """
import trio, multiaddr
from libp2p.crypto.ed25519 import create_new_key_pair
from gossip.exchange import ParamExchange, SnapshotStore
from gossip.host import build_host

async def main():
    hosts = [build_host(create_new_key_pair()) for _ in range(2)]
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with hosts[0].run(listen), hosts[1].run(listen):
        ParamExchange(hosts[0], SnapshotStore(), io_timeout=5.0)
        for host in hosts:
            print(host.get_addrs()[0], flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


@pytest.fixture(scope="module")
def anvil() -> Iterator[Chain]:
    with connect("anvil") as chain:
        yield chain


@pytest.fixture(scope="module")
def contract(anvil: Chain) -> str:
    return Ledger.deploy(anvil, dev_account(0)).address


@pytest.fixture(scope="module")
def neighbours() -> Iterator[tuple[str, str]]:
    """(a medswarm node's multiaddr, a libp2p host's that does not speak its protocol)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", NEIGHBOURS], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip(), proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()


def some_peer_id() -> str:
    return peer_id_of(create_new_key_pair())


def medswarm(*args: str) -> Result:
    return runner.invoke(app, list(args), env=ENV)


def flat(result: Result) -> str:
    return " ".join(result.output.split())


def onboard(folder: Path, chain: Chain, contract: str, neighbour: str) -> tuple[Path, str, str]:
    """What a hospital's IT team does before the consortium registers it: node init and
    ledger new-key, then the [ledger] section. Returns the config, peer ID and address."""
    data = HEART_DISEASE / "processed.cleveland.data"
    schema = str(HEART_DISEASE / "schema.toml")
    made = medswarm("node", "init", str(folder), "--name", "cleveland", "--data", str(data),
                    "--schema", schema, "--neighbour", neighbour)  # fmt: skip
    assert made.exit_code == 0, made.output
    peer = flat(made).split("peer id: ")[1].split()[0]
    key = medswarm("ledger", "new-key", str(folder / "eth.key"), "--scrypt-n", "16")
    assert key.exit_code == 0, key.output
    address = key.stdout.strip().splitlines()[-1]
    assert (folder / "eth.key").stat().st_mode & 0o777 == 0o600
    keystore = json.loads((folder / "eth.key").read_text())
    assert "crypto" in keystore and keystore["address"].lower() == address[2:].lower()
    config = folder / "node.toml"
    doc = tomlkit.parse(config.read_text())
    doc["ledger"]["enabled"] = True  # type: ignore[index]
    doc["ledger"]["chain"] = chain.url  # type: ignore[index]
    doc["ledger"]["contract"] = contract  # type: ignore[index]
    doc["ledger"]["key_file"] = "eth.key"  # type: ignore[index]
    config.write_text(tomlkit.dumps(doc))
    return config, peer, address


def test_a_new_member_is_onboarded(
    tmp_path: Path, anvil: Chain, contract: str, neighbours: tuple[str, str]
) -> None:
    config, peer, address = onboard(tmp_path / "site", anvil, contract, neighbours[0])

    before = medswarm("node", "doctor", "--config", str(config))
    assert before.exit_code == 1, before.output
    text = flat(before)
    assert "OK config" in text and "OK data processed.cleveland.data: 303 rows in" in text
    assert f"OK keys Ethereum account {address}" in text
    assert f"FAIL chain account {address} is not registered in the consortium" in text
    assert f"--member {address} --peer-id {peer} --name cleveland --fund" in text
    assert f"OK neighbour {neighbours[0]}: reachable, speaks {PROTOCOL}" in text

    registered = medswarm("ledger", "register", "--chain", str(anvil.url), "--contract",
                          contract, "--dev-account", "0", "--member", address, "--peer-id",
                          peer, "--name", "cleveland", "--fund", "0.25ether")  # fmt: skip
    assert registered.exit_code == 0, registered.output
    assert anvil.w3.eth.get_balance(address) == 25 * 10**16

    after = medswarm("node", "doctor", "--config", str(config))
    assert after.exit_code == 0, after.output
    assert f"OK chain cleveland is an active member: account {address}, peer ID {peer}" in flat(
        after
    )
    # The member writes with its keystore, paying its own gas.
    x25519 = medswarm("ledger", "set-x25519-key", "--chain", str(anvil.url), "--contract",
                      contract, "--key-file", str(config.parent / "eth.key"),
                      "--x25519-key-file", str(config.parent / "x25519.key"))  # fmt: skip
    assert x25519.exit_code == 0, x25519.output
    assert 0 < anvil.w3.eth.get_balance(address) < 25 * 10**16


def test_the_doctor_names_each_problem_and_its_fix(
    tmp_path: Path, anvil: Chain, contract: str, neighbours: tuple[str, str]
) -> None:
    config, peer, address = onboard(tmp_path / "site", anvil, contract, neighbours[0])
    Ledger(anvil, contract, dev_account(0)).register(address, peer, "cleveland")
    Ledger(anvil, contract, dev_account(0)).send_value(address, 10**16)
    ok = medswarm("node", "doctor", "--config", str(config))
    assert ok.exit_code == 0, ok.output

    # A key file others can read.
    (config.parent / "eth.key").chmod(0o644)
    loose = medswarm("node", "doctor", "--config", str(config))
    assert loose.exit_code == 1
    eth_key = config.parent / "eth.key"
    assert f"FAIL keys {eth_key}: key file mode 0o644 is too open" in flat(loose)
    assert f"fix: chmod 600 {eth_key}" in flat(loose)
    assert "membership not checked: fix the keys first" in flat(loose)
    eth_key.chmod(0o600)
    (config.parent / "identity.key").chmod(0o640)
    loose = medswarm("node", "doctor", "--config", str(config))
    assert loose.exit_code == 1
    assert f"fix: chmod 600 {config.parent / 'identity.key'}" in flat(loose)
    (config.parent / "identity.key").chmod(0o600)

    # A chain nobody answers at (a closed port).
    closed = f"http://127.0.0.1:{free_port()}"
    down = medswarm("node", "doctor", "--config", str(config), "--set", f'ledger.chain="{closed}"')
    assert down.exit_code == 1
    assert f"FAIL chain cannot reach the chain at {closed}" in flat(down)
    assert "fix: check ledger.chain against the URL the consortium gave you" in flat(down)

    # A wrong contract address: no code there.
    nowhere = medswarm("node", "doctor", "--config", str(config), "--set",
                       f'ledger.contract="{dev_account(7).address}"')  # fmt: skip
    assert nowhere.exit_code == 1
    assert f"FAIL chain no contract at {dev_account(7).address}" in flat(nowhere)

    # This node's identity is not the peer ID the consortium registered (a new identity key).
    other = peer_id_of(create_key_file(config.parent / "other.key"))
    moved = medswarm("node", "doctor", "-c", str(config), "--set", 'node.key_file="other.key"')
    assert moved.exit_code == 1
    assert f"is registered with peer ID {peer}, but this node's identity" in flat(moved)
    assert f"ask an admin to register peer ID {other} for this account" in flat(moved)

    # Neighbours: a closed port, a socket that accepts and never speaks, a libp2p host that
    # does not speak medswarm's protocol.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        dead = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{some_peer_id()}"
        mute = f"/ip4/127.0.0.1/tcp/{silent.getsockname()[1]}/p2p/{some_peer_id()}"
        listed = json.dumps([dead, mute, neighbours[1]])
        result = medswarm("node", "doctor", "--config", str(config), "--timeout", "1",
                          "--set", f"node.neighbours={listed}")  # fmt: skip
    assert result.exit_code == 1
    text = flat(result)
    assert f"FAIL neighbour {dead}: nothing accepts the connection there" in text
    assert f"FAIL neighbour {mute}: no answer within 1 s" in text
    assert f"FAIL neighbour {neighbours[1]}: answers libp2p but not {PROTOCOL} (" in text
    assert "protocol not supported" in text
    assert text.count("fix: check that the neighbour's node is running") == 2
    assert "3 problems found" in text


def test_libp2p_dial_noise_is_shown_only_when_asked_for(tmp_path: Path) -> None:
    """In a process of its own: pytest's log capture would swallow what reaches stderr."""
    data = HEART_DISEASE / "processed.cleveland.data"
    dead = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{some_peer_id()}"
    schema = str(HEART_DISEASE / "schema.toml")
    made = medswarm("node", "init", str(tmp_path), "--data", str(data), "--schema", schema,
                    "--neighbour", dead)  # fmt: skip
    assert made.exit_code == 0, made.output
    config = str(tmp_path / "node.toml")
    command = [sys.executable, "-m", "medswarm", "node", "doctor", "-c", config]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "250"}
    env.pop("MEDSWARM_LOG_LEVEL", None)
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert quiet.returncode == 1 and f"FAIL neighbour {dead}" in quiet.stderr
    loud = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={**env, "MEDSWARM_LOG_LEVEL": "DEBUG"})  # fmt: skip
    assert loud.returncode == 1 and f"FAIL neighbour {dead}" in loud.stderr
    dial_noise = "Failed to open TCP stream"  # py-libp2p's TCP transport, at ERROR
    assert dial_noise in loud.stderr
    assert dial_noise not in quiet.stderr
