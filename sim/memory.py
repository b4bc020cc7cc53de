"""The memory a run takes: the resident memory of the simulator and every process under it,
summed, sampled while the run goes (the kernel keeps each process's own peak, not the peak of
the sum, and one process's peak rarely meets another's)."""

import resource

import psutil


def own_peak_rss_mb() -> float:
    """This process's own peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MemoryPeak:
    def __init__(self) -> None:
        self.me = psutil.Process()
        self.peak_mb = 0.0
        self.at_peak: list[float] = []  # each process's MB at the peak, this one first

    def sample(self) -> float:
        """The summed RSS now (MB), and the peak so far updated with it."""
        sizes = []
        for process in [self.me, *self.me.children(recursive=True)]:
            try:
                if process is not self.me and _unexecuted_fork(process):
                    continue
                sizes.append(process.memory_info().rss / 2**20)
            except psutil.Error:  # it exited meanwhile
                continue
        now = sum(sizes)
        if now > self.peak_mb:
            self.peak_mb, self.at_peak = now, sizes
        return now


def _unexecuted_fork(process: psutil.Process) -> bool:
    """A child caught between fork and exec (a library starting a helper program): it runs its
    parent's program on its parent's pages, shared, and would count its parent twice."""
    parent = process.parent()
    return parent is not None and process.cmdline() == parent.cmdline()
