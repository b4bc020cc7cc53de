"""Where a run's nodes live: one OS process each (`process`), or all in this process as trio
tasks (`inproc`), each still with its own real libp2p host on 127.0.0.1.

Both run exactly the node's code from its config file (the process backend through the
`medswarm node run` CLI, inproc through `node.runner.NodeRunner`, the CLI's own entry point),
and both can kill a node abruptly and start it again (it resumes from its checkpoint): SIGKILL
to the process, or a cancel of the node's tasks, which close its host on the way out as the OS
closes a dead process's sockets. Only a process can be frozen and thawed (SIGSTOP, SIGCONT): a
task cannot be stopped alone in the event loop it shares with the others.
"""

import json
import os
import signal
import subprocess
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

import trio

from gossip.logs import libp2p_verbosity
from node.config import load_config
from sim.local_swarm import tail


class Nodes(Protocol):
    def start(self, name: str) -> None: ...
    def kill(self, name: str) -> None: ...
    def pause(self, name: str) -> None: ...
    def resume(self, name: str) -> None: ...
    def running(self, name: str) -> bool: ...
    def failures(self) -> dict[str, str]: ...
    def stop_all(self) -> None: ...


START_LOG_LINES = 20  # of a node's log, shown when it fails at start-up


def failed_at_start(nodes: Nodes, folder: Path, starting: Collection[str]) -> str | None:
    """Why the run must stop now, or None: a node of `starting` (none of its rounds recorded
    yet) has failed. Its peers would otherwise wait out their start-up timeout for it and fail
    too, burying the cause; the message names each such node, its error and its log's last
    lines (nodes/<name>/node.log, where its backend writes one)."""
    if not starting:
        return None  # (asking a backend for its failures may cost a call per node)
    failed = {n: why for n, why in nodes.failures().items() if n in starting}
    if not failed:
        return None
    parts = []
    for name, why in failed.items():
        lines = tail(folder / "nodes" / name / "node.log", START_LOG_LINES)
        shown = f"; the last lines of its log:\n{lines}" if lines.strip() else ""
        parts.append(f"node {name} failed at start-up ({why}){shown}")
    return "\n".join(parts)


class ProcessNodes:
    def __init__(self, folder: Path, overrides: Mapping[str, Any]) -> None:
        self.folder, self.overrides = folder, overrides
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: set[str] = set()
        self.paused: set[str] = set()

    def start(self, name: str) -> None:
        from sim.local_swarm import start_node

        self.procs[name] = start_node(self.folder, name, self.overrides)
        self.killed.discard(name)

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)  # a stopped process dies of it too
        self.procs[name].wait()
        self.killed.add(name)
        self.paused.discard(name)

    def pause(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGCONT)
        self.paused.discard(name)

    def running(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def failures(self) -> dict[str, str]:
        return {
            n: f"exit code {p.returncode}; see {self.folder}/nodes/{n}/node.log"
            for n, p in self.procs.items()
            if p.poll() and n not in self.killed
        }

    def stop_all(self) -> None:
        # A stopped process holds SIGTERM until it is continued: it would be killed, not stopped.
        for name in list(self.paused):
            if self.running(name):
                self.resume(name)
        from sim.local_swarm import stop_processes

        stop_processes(self.procs.values())


class InprocNodes:
    """Nodes as tasks of one trio nursery."""

    def __init__(
        self,
        folder: Path,
        overrides: Mapping[str, Any],
        nursery: trio.Nursery,
        on_exit: Callable[[str, str | None], None] = lambda name, error: None,
    ) -> None:
        self.folder, self.nursery, self.on_exit = folder, nursery, on_exit
        self.overrides = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]  # as the CLI
        self.scopes: dict[str, trio.CancelScope] = {}
        self.exited: dict[str, trio.Event] = {}
        self.alive: set[str] = set()
        self.errors: dict[str, str] = {}
        self.cpu = trio.CapacityLimiter(1)  # one node's training at a time: they share a GIL
        # Each failed dial to a killed node is logged by libp2p (the dialer, [ADDCONN_FAIL]);
        # the node already reports it as a neighbour missed that round, and a few hundred nodes
        # would drown the run: kept out unless $MEDSWARM_LOG_LEVEL asks for INFO (gossip/logs.py).
        libp2p_verbosity()

    def start(self, name: str) -> None:
        from node.runner import NodeRunner

        cfg = load_config(self.folder / "nodes" / name / "node.toml", self.overrides)
        scope = trio.CancelScope()
        runner = NodeRunner(cfg, cpu=self.cpu)
        previous = self.exited.get(name)
        exited = self.exited[name] = trio.Event()
        self.scopes[name] = scope
        self.alive.add(name)

        async def run() -> None:
            try:
                if previous is not None:
                    await previous.wait()  # a restart reuses the killed node's port
                with scope:
                    await runner.run()
            except Exception as exc:  # one node failing must not stop the others
                self.errors[name] = f"{type(exc).__name__}: {exc}"
            finally:
                exited.set()
                if self.scopes[name] is scope:  # not a killed run whose restart is under way
                    self.alive.discard(name)
                    self.on_exit(name, self.errors.get(name))

        self.nursery.start_soon(run)

    def kill(self, name: str) -> None:
        self.scopes[name].cancel()
        self.alive.discard(name)

    def pause(self, name: str) -> None:
        raise NotImplementedError("inproc nodes cannot be frozen (the scenario rejects it)")

    def resume(self, name: str) -> None:
        raise NotImplementedError("inproc nodes cannot be frozen (the scenario rejects it)")

    def running(self, name: str) -> bool:
        return name in self.alive

    def failures(self) -> dict[str, str]:
        return dict(self.errors)

    def stop_all(self) -> None:
        for scope in self.scopes.values():
            scope.cancel()
