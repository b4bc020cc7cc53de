"""The live dashboard's app: the page, `/api/state` (the run's state as JSON), `/events` (the
same as server-sent events: a snapshot, then what changed, as the run folder grows) and the
report once it is written. It reads the run folder (medswarm.web.run_state); it holds no key
and serves no file but its own and the report's."""

import json
import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from medswarm.web.run_state import RunState
from medswarm.web.serve import chart_js_route

STATIC = Path(__file__).parent / "static"
POLL_SECONDS = 0.5  # how often the run folder is read
KEEP_ALIVE_SECONDS = 15.0  # a comment on a quiet stream, so proxies and browsers keep it
EVENT_LOG = 2000  # events kept for streams that fall behind; further behind: a new snapshot


class Hub:
    """The one reader of the run folder (polled in a worker thread) and the events it found,
    numbered, for every open stream."""

    def __init__(self, state: RunState, period: float = POLL_SECONDS) -> None:
        self.state = state
        self.period = period
        self.lock = threading.Lock()
        self.seq = 0
        self.log: deque[tuple[int, str, str]] = deque(maxlen=EVENT_LOG)
        self.changed: anyio.Event | None = None
        self.stopping = threading.Event()  # the server is stopping: streams end

    def stop(self) -> None:
        """End every open stream (called from the server's signal handler)."""
        self.stopping.set()

    def poll(self) -> int:
        """Read the folder once; the number of new events."""
        with self.lock:
            events = self.state.poll()
            for kind, data in events:
                self.seq += 1
                self.log.append((self.seq, kind, json.dumps(data)))
            return len(events)

    def snapshot(self) -> tuple[int, str]:
        with self.lock:
            return self.seq, json.dumps(self.state.snapshot())

    def since(self, seq: int) -> list[tuple[int, str, str]] | None:
        """The events after `seq`, or None if some of them are no longer kept."""
        with self.lock:
            if seq < self.seq and (not self.log or self.log[0][0] > seq + 1):
                return None
            return [e for e in self.log if e[0] > seq]

    async def run(self) -> None:
        self.changed = anyio.Event()
        while True:
            if await anyio.to_thread.run_sync(self.poll):
                done, self.changed = self.changed, anyio.Event()
                done.set()
            await anyio.sleep(self.period)


def sse(kind: str, data: str, seq: int) -> str:
    return f"id: {seq}\nevent: {kind}\ndata: {data}\n\n"


def create_app(root: Path, period: float = POLL_SECONDS) -> Starlette:
    """The dashboard of the run folder `root` (which may not hold a run yet)."""
    hub = Hub(RunState(root), period)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        hub.poll()  # the first state before the first request
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(hub.run)
            yield
            tasks.cancel_scope.cancel()

    async def page(_request: Request) -> Response:
        return FileResponse(STATIC / "dashboard.html", media_type="text/html")

    async def state(_request: Request) -> Response:
        seq, body = hub.snapshot()
        return Response(body, media_type="application/json", headers={"X-Event-Id": str(seq)})

    async def events(_request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            seq, body = hub.snapshot()
            yield sse("snapshot", body, seq)
            quiet = 0.0
            while not hub.stopping.is_set():
                waiter = hub.changed
                new = hub.since(seq)
                if new is None:  # fell behind the kept events: start over
                    seq, body = hub.snapshot()
                    yield sse("snapshot", body, seq)
                    continue
                for seq, kind, data in new:
                    yield sse(kind, data, seq)
                if new:
                    continue
                # In slices of a poll, to see `stopping` soon.
                if waiter is None:
                    await anyio.sleep(hub.period)
                else:
                    with anyio.move_on_after(hub.period):
                        await waiter.wait()
                quiet = 0.0 if waiter is not None and waiter.is_set() else quiet + hub.period
                if quiet >= KEEP_ALIVE_SECONDS:
                    quiet = 0.0
                    yield ": still here\n\n"

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def report(request: Request) -> Response:
        name = request.path_params["name"]
        path = hub.state.report_file(name)
        if path is None:
            return PlainTextResponse(f"no report file {name!r} here", status_code=404)
        return FileResponse(path)

    routes: list[Route | Mount] = [
        Route("/", page),
        Route("/api/state", state),
        Route("/events", events),
        Route("/report/{name}", report),
        Route("/favicon.ico", lambda _request: Response(status_code=204)),
        chart_js_route(),
        Mount("/assets", StaticFiles(directory=STATIC), name="assets"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.hub = hub
    return app
