"""MemoryPeak sums the simulator's and its children's resident memory, without counting twice
a child caught between fork and exec (its parent's pages, shared)."""

import os
import signal
import subprocess
import sys
import time

from sim.memory import MemoryPeak


def test_a_fork_before_exec_is_not_counted_but_a_started_program_is():
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    pid = os.fork()
    if pid == 0:  # the child: the parent's program, never exec'd
        time.sleep(30)
        os._exit(0)
    try:
        time.sleep(0.5)  # the worker is past its exec
        peak = MemoryPeak()
        peak.sample()
        assert len(peak.at_peak) == 2  # this process and the worker, not the fork
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        worker.kill()
        worker.wait()
