import os
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medswarm.cli import app
from node.health import check_health, dial_target, progress_age
from node.init import init_node

DATA = Path(__file__).resolve().parents[3] / "data" / "heart-disease"


@pytest.fixture
def listener():
    """A socket that accepts TCP on loopback, standing in for a node's libp2p port."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return server.getsockname()[1]


@pytest.mark.parametrize(
    ("listen", "target"),
    [
        ("/ip4/0.0.0.0/tcp/4001", ("127.0.0.1", 4001)),
        ("/ip4/10.1.2.3/tcp/4001/p2p/12D3KooWabc", ("10.1.2.3", 4001)),
        ("/ip6/::/tcp/4002", ("::1", 4002)),
        ("/dns4/node-a/tcp/4003", ("node-a", 4003)),
    ],
)
def test_dial_target_reaches_the_listen_address_locally(listen, target):
    assert dial_target(listen) == target


@pytest.mark.parametrize("listen", ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/4001", "nonsense"])
def test_dial_target_rejects_what_cannot_be_dialled(listen):
    with pytest.raises(ValueError):
        dial_target(listen)


def test_a_listening_port_is_healthy_and_a_closed_one_is_not(tmp_path, listener):
    assert check_health(f"/ip4/0.0.0.0/tcp/{listener}", tmp_path) == []
    [problem] = check_health(f"/ip4/127.0.0.1/tcp/{closed_port()}", tmp_path)
    assert "nothing accepts TCP" in problem


def test_max_age_wants_a_recent_progress_file(tmp_path, listener):
    listen = f"/ip4/127.0.0.1/tcp/{listener}"
    [problem] = check_health(listen, tmp_path, max_age=60)
    assert "no metrics.jsonl or peer.json" in problem

    peer, metrics = tmp_path / "peer.json", tmp_path / "metrics.jsonl"
    peer.write_text("{}")
    old = time.time() - 600
    os.utime(peer, (old, old))
    [problem] = check_health(listen, tmp_path, max_age=60)
    assert "no progress" in problem

    metrics.write_text("{}\n")  # a round just finished: the newer file counts
    assert check_health(listen, tmp_path, max_age=60) == []
    assert progress_age(tmp_path, now=metrics.stat().st_mtime + 5) == pytest.approx(5)


def test_cli_exit_code_follows_the_node(tmp_path, listener):
    def config(folder: Path, port: int) -> Path:
        path, _ = init_node(
            folder,
            "cleveland",
            str(DATA / "processed.cleveland.data"),
            str(DATA / "schema.toml"),
            f"/ip4/0.0.0.0/tcp/{port}",
            [],
        )
        return path

    runner = CliRunner()
    up = runner.invoke(app, ["node", "health", "--config", str(config(tmp_path / "a", listener))])
    assert up.exit_code == 0, up.output
    down = runner.invoke(app, ["node", "health", "-c", str(config(tmp_path / "b", closed_port()))])
    assert down.exit_code == 1
    assert "cleveland unhealthy: nothing accepts TCP" in down.output
