"""Serving a page's app on this machine only, and the static files every page shares."""

import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.responses import FileResponse, PlainTextResponse
from starlette.routing import Route

HOST = "127.0.0.1"  # never another interface: the pages are for the user at this machine
# chart.js as npm installed it (package.json pins it); no CDN, the machines may be offline.
CHART_JS = Path(__file__).resolve().parents[2] / "node_modules/chart.js/dist/chart.umd.min.js"


def chart_js_route() -> Route:
    """`/static/chart.js`, or a 503 that says how to install it."""

    async def chart_js(_request: object) -> FileResponse | PlainTextResponse:
        if not CHART_JS.exists():
            return PlainTextResponse(
                f"{CHART_JS} is missing: run `npm install` in the medswarm checkout "
                "(scripts/setup.sh does)",
                status_code=503,
            )
        return FileResponse(CHART_JS, media_type="text/javascript")

    return Route("/static/chart.js", chart_js)


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app when Ctrl-C or SIGTERM arrives (so that its open event
    streams end, which uvicorn's graceful shutdown waits for)."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)


def serve(app: Starlette, port: int, on_exit: Callable[[], None] | None = None) -> None:
    """Serve `app` on 127.0.0.1:`port` until Ctrl-C or SIGTERM; `on_exit` is called when
    either arrives (streams still open a few seconds later are cut). SIGTERM then exits with
    status 0 through the caller's `with` blocks, as Ctrl-C does (uvicorn raises the signal again
    after its shutdown; by default that would kill the process before they close a managed
    chain or a child)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = uvicorn.Config(
        app, host=HOST, port=port, log_level="warning", timeout_graceful_shutdown=5
    )
    _Server(config, on_exit or (lambda: None)).run()


def port_in_use(port: int) -> bool:
    """Whether 127.0.0.1:`port` is taken by a listener or a bound socket (not by connections
    closing on it: uvicorn binds over those, as this does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def url(port: int) -> str:
    return f"http://{HOST}:{port}/"
