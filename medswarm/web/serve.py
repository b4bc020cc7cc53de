"""Serving a page's app on this machine only, and the static files every page shares."""

from pathlib import Path

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


def serve(app: Starlette, port: int) -> None:
    """Serve `app` on 127.0.0.1:`port` until Ctrl-C or SIGTERM."""
    uvicorn.run(app, host=HOST, port=port, log_level="warning")
