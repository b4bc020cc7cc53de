import json
import socket
from pathlib import Path

import typer
from starlette.testclient import TestClient
from typer.testing import CliRunner

from medswarm.cli import app as cli
from medswarm.cli.sim import DASHBOARD_PORT
from medswarm.cli.sim import app as sim_app
from medswarm.web.child import DashboardChild, DashboardError
from medswarm.web.dashboard import Hub, create_app, sse
from medswarm.web.run_state import RunState
from medswarm.web.serve import HOST
from tests.unit.medswarm.dashboard_folder import KEY_FILES, NAMES, SECRET, FakeRun


def test_the_app_serves_the_state_the_page_and_the_report_only(tmp_path: Path) -> None:
    run = FakeRun(tmp_path, rounds=1)
    for n in NAMES:
        run.record(n, 1)
    with TestClient(create_app(tmp_path)) as client:
        state = client.get("/api/state").json()
        assert state["status"]["latest"] == {n: 1 for n in NAMES}
        assert [r["round"] for r in state["records"]["alpha"]] == [1]
        page = client.get("/")
        assert page.status_code == 200 and "/events" in client.get("/assets/dashboard.js").text
        assert client.get("/report/report.html").status_code == 404  # not written yet
    run.finish([{"round": 1, "distance": 0.5}])
    with TestClient(create_app(tmp_path)) as client:
        report = client.get("/report/report.html")
        assert report.status_code == 200 and "the report" in report.text
        answers = [
            client.get(f"/report/{name}")
            for name in (*KEY_FILES, "summary.json", "..%2Fnodes%2Falpha%2Feth.key")
        ]
        answers += [client.get(f"/report/../nodes/alpha/{name}") for name in KEY_FILES]
        answers += [client.get(f"/nodes/alpha/{name}") for name in KEY_FILES]
        answers += [client.get(f"/assets/../../../{tmp_path}/nodes/alpha/eth.key")]
        answers += [client.get("/assets/%2E%2E/run_state.py")]
        for answer in answers:
            assert answer.status_code == 404, answer.url
            assert SECRET not in answer.text
        assert SECRET not in client.get("/api/state").text


def test_the_hub_numbers_events_and_says_when_a_stream_fell_behind(tmp_path: Path) -> None:
    run = FakeRun(tmp_path)
    hub = Hub(RunState(tmp_path))
    assert hub.poll() == 1  # the first snapshot
    seq, body = hub.snapshot()
    assert seq == 1 and json.loads(body)["status"]["nodes"] == NAMES
    run.record("alpha", 1)
    hub.poll()
    new = hub.since(1)
    assert new is not None and [kind for _, kind, _ in new] == ["records", "status"]
    assert [s for s, _, _ in new] == [2, 3]
    assert hub.since(3) == []
    hub.log.popleft()
    hub.log.popleft()
    assert hub.since(0) is None  # its events are gone: it starts again from a snapshot
    assert sse("status", '{"a": 1}', 7) == 'id: 7\nevent: status\ndata: {"a": 1}\n\n'


def test_the_dashboard_command_says_what_a_run_folder_is(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dashboard", str(tmp_path)])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "is not a run folder" in said and "seed-<n>/ folders" in said


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            DashboardChild(tmp_path, port)
        except DashboardError as exc:
            assert f"port {port}" in str(exc) and "in use" in str(exc)
        else:
            raise AssertionError("a port in use was accepted")
        scenario = tmp_path / "missing.toml"  # never read: the port is checked first
        out = tmp_path / "run"
        result = CliRunner().invoke(
            cli, ["sim", "run", str(scenario), "--out", str(out), "--dashboard", str(port)]
        )
        assert result.exit_code == 2 and "in use" in result.output
        assert not out.exists()
        result = CliRunner().invoke(cli, ["dashboard", str(out), "--port", str(port), "--wait"])
        assert result.exit_code == 2 and "in use" in result.output


def test_dashboard_without_a_port_takes_the_default() -> None:
    command = typer.main.get_command(sim_app).commands["run"]  # type: ignore[attr-defined]

    def port(*args: str) -> object:
        return command.make_context("run", list(args)).params["dashboard"]

    assert port("s.toml") is None
    assert port("s.toml", "--dashboard") == DASHBOARD_PORT
    assert port("s.toml", "--dashboard", "--out", "x") == DASHBOARD_PORT
    assert port("--dashboard", "s.toml") == DASHBOARD_PORT
    assert port("s.toml", "--dashboard", "9123") == 9123
    assert port("s.toml", "--dashboard=9124") == 9124
