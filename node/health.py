"""`medswarm node health`: is the node of a config alive? For container health checks.

Alive means its libp2p port accepts TCP on this machine; optionally also that it made progress
lately: the newer of metrics.jsonl (a record per round) and peer.json (written once listening)
in its output folder is recent. The check connects and closes at once: it sends nothing.
"""

import socket
import time
from pathlib import Path

PROGRESS_FILES = ("metrics.jsonl", "peer.json")
# A wildcard listen address is reached through loopback from the same machine (container).
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def dial_target(listen: str) -> tuple[str, int]:
    """The (host, port) that reaches a node listening on the multiaddr `listen`, locally."""
    parts = listen.strip("/").split("/")
    fields = dict(zip(parts[::2], parts[1::2], strict=False))
    host = next((fields[p] for p in ("ip4", "ip6", "dns4", "dns6", "dns") if p in fields), None)
    if host is None or "tcp" not in fields or not fields["tcp"].isdigit():
        raise ValueError(f"expected a multiaddr such as /ip4/0.0.0.0/tcp/4001: {listen}")
    port = int(fields["tcp"])
    if port == 0:
        raise ValueError(f"{listen} listens on a random port; a health check needs a fixed one")
    return _LOOPBACK.get(host, host), port


def progress_age(output_dir: Path, now: float | None = None) -> float | None:
    """Seconds since the newest progress file changed, or None when there is none yet."""
    times = [p.stat().st_mtime for name in PROGRESS_FILES if (p := output_dir / name).is_file()]
    if not times:
        return None
    return (time.time() if now is None else now) - max(times)


def check_health(
    listen: str, output_dir: Path, max_age: float | None = None, timeout: float = 3.0
) -> list[str]:
    """What is wrong with the node (an empty list: healthy)."""
    problems = []
    try:
        host, port = dial_target(listen)
    except ValueError as exc:
        return [str(exc)]
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        problems.append(f"nothing accepts TCP on {host}:{port} ({exc.strerror or exc})")
    if max_age is not None:
        age = progress_age(output_dir)
        if age is None:
            problems.append(f"no {' or '.join(PROGRESS_FILES)} in {output_dir} yet")
        elif age > max_age:
            problems.append(f"no progress in {output_dir} for {age:.0f} s (limit {max_age:g} s)")
    return problems
