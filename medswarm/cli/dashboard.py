"""`medswarm dashboard RUN_DIR`: a live page of a simulator run, on 127.0.0.1."""

from pathlib import Path
from typing import Annotated

import typer

from medswarm.cli.common import console, fail

app = typer.Typer()
DEFAULT_PORT = 8050


@app.command("dashboard")
def dashboard(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (`medswarm sim run --out`).")],
    port: Annotated[int, typer.Option(help="The port on 127.0.0.1.")] = DEFAULT_PORT,
    wait: Annotated[
        bool,
        typer.Option(hidden=True, help="The run is about to start in RUN_DIR (sim run does)."),
    ] = False,
) -> None:
    """Serve a live page of a simulator run: each node's rounds and accuracy, consensus
    distance, faults in effect, bytes, contributions, rewards and privacy budget, and the
    report once the run has ended. It reads the run folder as the run writes it; it serves
    no key. Ctrl-C stops it."""
    from medswarm.web.dashboard import create_app
    from medswarm.web.run_state import NotARunFolder, check_run_folder
    from medswarm.web.serve import port_in_use, serve, url

    if not wait:
        try:
            check_run_folder(run_dir)
        except NotARunFolder as exc:
            raise fail(str(exc)) from None
    if port_in_use(port):
        raise fail(f"port {port} on 127.0.0.1 is in use: choose another with --port")
    console.print(f"dashboard of {run_dir} at {url(port)} (Ctrl-C stops it)", highlight=False)
    app = create_app(run_dir)
    serve(app, port, on_exit=app.state.hub.stop)
