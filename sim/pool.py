"""The inproc backend over several processes: the nodes are split among `workers` processes,
the simulator's own and `workers - 1` worker processes (`medswarm sim worker`), each running its
share as trio tasks (`InprocNodes`), every node still with its own libp2p host and identity.
Start-up (Python, torch, libp2p) is paid once per process, not per node, and the processes
use all the cores, which one process cannot (training holds the GIL between torch calls).

The workers are started first (`spawn_workers`), so that their imports (2 to 3 s of torch
and libp2p) overlap the simulator's preparing the data and the nodes' folders. The simulator
talks to each worker over its stdin and stdout, one JSON object a line: first
{"op": "configure", "overrides": {...}} (the node-config overrides, such as the chain's URL,
known only once the chain is up), then {"op": "start" | "kill", "node": name} and
{"op": "stop"}; events
{"event": "exited", "node": name, "error": text or null} and, last, {"event": "done"}. A worker
whose stdin closes (the simulator died) stops its nodes and exits. Its log goes to
workers/worker-<i>.log in the run folder, and workers/placement.json says where each node ran.
"""

import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from sim.backends import InprocNodes
from sim.errors import SimError

STOP_SECONDS = 30.0  # after "stop": then the worker is killed


class WorkerError(SimError):
    """A worker process failed or broke the protocol."""


class _Worker:
    def __init__(self, index: int, process: "subprocess.Popen[bytes]") -> None:
        assert process.stdin is not None and process.stdout is not None
        self.index = index
        self.process = process
        self.stdin = trio.lowlevel.FdStream(os.dup(process.stdin.fileno()))
        self.stdout = trio.lowlevel.FdStream(os.dup(process.stdout.fileno()))
        process.stdin.close()
        process.stdout.close()
        self.commands, self.outbox = trio.open_memory_channel[dict[str, Any]](1_000_000)

    async def wait(self) -> int:
        while (code := self.process.poll()) is None:
            await trio.sleep(0.05)
        return code


def spawn_workers(folder: Path, count: int) -> list["subprocess.Popen[bytes]"]:
    """Start `count` worker processes for the run in `folder` (its workers/ holds their logs);
    they import what nodes need and wait for "configure" on their stdin. A worker whose stdin
    is closed exits: `stop_unused` for a run that fails before handing them to `worker_pool`."""
    logs = folder / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    for i in range(1, count + 1):
        with open(logs / f"worker-{i}.log", "ab") as log_file:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "medswarm", "sim", "worker", str(folder)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )
    return processes


def stop_unused(processes: list["subprocess.Popen[bytes]"]) -> None:
    """Workers that never got their nodes: close their stdin (they exit), wait, else kill."""
    for process in processes:
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()
    for process in processes:
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def balance(loads: Mapping[str, float], slots: int) -> dict[str, int]:
    """Each node to a slot (0 .. slots - 1), the heaviest first to the least loaded slot: the
    slots' training time per round evens out when `loads` are the nodes' data sizes."""
    totals = [0.0] * slots
    out = {}
    for name in sorted(loads, key=lambda n: (-loads[n], n)):
        slot = totals.index(min(totals))
        out[name] = slot
        totals[slot] += loads[name]
    return out


class PoolNodes:
    """Nodes as trio tasks of this process (slot 0, `local`) and of worker processes (slots
    1 ..), each where `slots` puts it (a restarted node goes back to where it ran: its port is
    free there once it has exited)."""

    def __init__(self, local: InprocNodes, workers: list[_Worker], slots: dict[str, int]) -> None:
        self.local = local
        self.workers = workers
        self.slots = slots
        self.home: dict[str, _Worker | None] = {}  # None: this process
        self.alive: set[str] = set()  # of the workers' nodes
        self.errors: dict[str, str] = {}

    def start(self, name: str) -> None:
        slot = self.slots[name]
        worker = self.home.setdefault(name, self.workers[slot - 1] if slot else None)
        if worker is None:
            self.local.start(name)
            return
        worker.commands.send_nowait({"op": "start", "node": name})
        self.alive.add(name)

    def kill(self, name: str) -> None:
        worker = self.home[name]
        if worker is None:
            self.local.kill(name)
            return
        worker.commands.send_nowait({"op": "kill", "node": name})
        self.alive.discard(name)

    def pause(self, name: str) -> None:
        self.local.pause(name)  # refused, as by every inproc node

    def resume(self, name: str) -> None:
        self.local.resume(name)

    def running(self, name: str) -> bool:
        return name in self.alive or self.local.running(name)

    def failures(self) -> dict[str, str]:
        return {**self.local.failures(), **self.errors}

    def stop_all(self) -> None:
        self.local.stop_all()
        for worker in self.workers:
            worker.commands.send_nowait({"op": "stop"})

    def on_event(self, worker: _Worker, event: dict[str, Any]) -> None:
        if event.get("event") == "exited":
            name = str(event["node"])
            self.alive.discard(name)
            if event.get("error"):
                self.errors[name] = str(event["error"])


@asynccontextmanager
async def worker_pool(
    folder: Path,
    overrides: Mapping[str, Any],
    processes: list["subprocess.Popen[bytes]"],
    loads: Mapping[str, float],
) -> AsyncIterator[PoolNodes]:
    """This process and the worker `processes` (`spawn_workers`) for the nodes of the run in
    `folder` (the keys of `loads`, spread by `balance`); on the way out every node is stopped
    and every worker has exited (killed if it does not within STOP_SECONDS)."""
    logs = folder / "workers"
    async with trio.open_nursery() as nursery:
        workers = [_Worker(i, process) for i, process in enumerate(processes, start=1)]
        slots = balance(loads, len(workers) + 1)
        places = {n: f"worker-{slot}" if slot else "simulator" for n, slot in slots.items()}
        (logs / "placement.json").write_text(json.dumps(places, indent=1))
        nodes = PoolNodes(InprocNodes(folder, overrides, nursery), workers, slots)
        for worker in workers:
            worker.commands.send_nowait({"op": "configure", "overrides": dict(overrides)})
            nursery.start_soon(_send, worker)
            nursery.start_soon(_receive, worker, nodes)
        try:
            yield nodes
        finally:
            nodes.stop_all()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(STOP_SECONDS):
                    for worker in workers:
                        await worker.wait()
                for worker in workers:
                    if worker.process.poll() is None:
                        worker.process.kill()
                        await worker.wait()
                    worker.commands.close()
    failed = {w.index: w.process.returncode for w in workers if w.process.returncode}
    if failed:
        raise WorkerError(f"worker processes failed: {failed}; see {logs}/worker-<i>.log")


async def _send(worker: _Worker) -> None:
    stdin = worker.stdin
    async with worker.outbox:
        async for command in worker.outbox:
            try:
                await stdin.send_all((json.dumps(command) + "\n").encode())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the worker is gone: _receive and the pool's exit say so
            if command["op"] == "stop":
                await stdin.aclose()
                return


async def _receive(worker: _Worker, nodes: PoolNodes) -> None:
    async with worker.stdout:
        async for line in _lines(worker.stdout):
            try:
                event = json.loads(line)
            except ValueError:
                raise WorkerError(f"worker {worker.index} wrote {line[:200]!r}") from None
            if event.get("event") == "done":
                return
            nodes.on_event(worker, event)
    # Its stdout closed before "done": it died; its nodes died with it.
    for name, home in nodes.home.items():
        if home is worker and name in nodes.alive:
            nodes.alive.discard(name)
            nodes.errors[name] = f"worker {worker.index} exited; see workers/worker-*.log"


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    buffer = b""
    while chunk := await stream.receive_some():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line.decode()


# -- the worker's side -------------------------------------------------------------------------


def serve_worker(folder: Path) -> None:
    """`medswarm sim worker`: run the nodes the simulator names on stdin until it says stop."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    # What its nodes need (torch, libp2p, the Parquet reader), imported now, while the
    # simulator is still preparing the run, not when the first node starts.
    import pyarrow.parquet  # noqa: F401

    import node.runner  # noqa: F401

    trio.run(_serve, folder)


async def _serve(folder: Path) -> None:
    def report(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    commands = _lines(stdin)
    async with trio.open_nursery() as nursery:
        first = json.loads(await anext(commands, '{"op": "stop"}'))
        if first["op"] == "configure":
            nodes = InprocNodes(folder, first["overrides"], nursery, on_exit=lambda n, e: report(
                {"event": "exited", "node": n, "error": e}))  # fmt: skip
            async for line in commands:
                command = json.loads(line)
                if command["op"] == "start":
                    nodes.start(command["node"])
                elif command["op"] == "kill":
                    nodes.kill(command["node"])
                elif command["op"] == "stop":
                    break
            nodes.stop_all()  # also when stdin closed: the simulator is gone
    report({"event": "done"})
