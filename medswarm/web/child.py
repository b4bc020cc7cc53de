"""The dashboard beside a simulator run: `python -m medswarm dashboard` as a child process (its
own interpreter: serving the page never takes the simulator's GIL), started before the rounds
and stopped with the run, or after it when the user is done looking."""

import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from medswarm.web.serve import HOST, port_in_use, url

START_TIMEOUT = 60.0  # seconds for the child to answer (its imports, on a busy machine)


class DashboardError(RuntimeError):
    """The dashboard could not be started."""


class DashboardChild:
    """`with DashboardChild(run_dir, port) as child:` the dashboard of `run_dir` on `port`,
    answering once the block is entered; stopped when it is left."""

    def __init__(self, run_dir: Path, port: int) -> None:
        if port_in_use(port):
            raise DashboardError(
                f"port {port} on {HOST} is in use: choose another with --dashboard PORT"
            )
        self.run_dir, self.port = run_dir, port
        self.url = url(port)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "DashboardChild":
        command = [sys.executable, "-m", "medswarm", "dashboard", str(self.run_dir)]
        command += ["--port", str(self.port), "--wait"]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                raise DashboardError(f"the dashboard exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise DashboardError(f"the dashboard did not answer on {self.url}")
            time.sleep(0.1)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _answers(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def wait(self) -> int:
        """Until the dashboard stops (Ctrl-C or SIGTERM reach the caller first)."""
        assert self.process is not None
        return self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # uvicorn's graceful stop
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
