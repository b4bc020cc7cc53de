"""A local chain process we own: started, its output drained, stopped (and killed if needed)."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence

from ledger.errors import BackendError


class ManagedProcess:
    """Runs `argv`, waits for a line matching `ready` (whose group 1 is the port), and keeps
    the last output lines for error messages. The pipe is drained by a thread so a chatty
    chain never blocks on a full pipe."""

    def __init__(self, name: str, argv: Sequence[str], ready: re.Pattern[str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready = ready
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self._tail: deque[str] = deque(maxlen=40)
        self._ready = threading.Event()

    def start(self, timeout: float = 60.0) -> int:
        if self.proc is not None and self.proc.poll() is None:
            raise BackendError(self.name, "already running")
        self._ready.clear()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # a Ctrl-C to the caller is ours to forward
            )
        except OSError as exc:
            raise BackendError(self.name, f"cannot start {self.argv[0]}: {exc}") from exc
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BackendError(self.name, "did not start:\n" + "\n".join(self._tail))
        assert self.port is not None
        return self.port

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._tail.append(line.rstrip())
            if not self._ready.is_set():
                match = self.ready.search(line)
                if match:
                    self.port = int(match.group(1))
                    self._ready.set()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Anvil saves its --state on it), then SIGKILL if it does not exit."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
