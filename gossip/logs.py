"""How much of py-libp2p's logging reaches the terminal.

py-libp2p logs every failed dial: the TCP transport at ERROR ("failed to connect"), the swarm
a `[ADDCONN_FAIL]` warning with a traceback when a connection's upgrade fails (a peer killed
mid-handshake, a simultaneous dial), the host an ERROR for each stream it could not open (and
raises it). A node already reports a neighbour it could not reach, in
its metrics and progress line, so those records are noise: down to INFO (a node's own
rounds and neighbours) only libp2p's other errors are shown. `--log-level DEBUG` (or
$MEDSWARM_LOG_LEVEL, which the simulator passes on to its nodes) brings everything back;
py-libp2p's own $LIBP2P_DEBUG, when set, is left to configure its loggers itself.
"""

import logging
import os

LOG_LEVEL_ENV = "MEDSWARM_LOG_LEVEL"
DEFAULT_LEVEL = "WARNING"
# What is kept out at the default level: logger -> the lowest level still shown.
QUIETED = {
    "libp2p": logging.ERROR,  # [ADDCONN_FAIL] and other per-connection warnings
    "libp2p.transport.tcp": logging.CRITICAL,  # each failed dial, logged as an ERROR
    # a stream that could not be opened, logged as an ERROR of eight lines, then raised
    "libp2p.host.basic_host": logging.CRITICAL,
    # py-libp2p sets this one to INFO itself: its state every few seconds
    "libp2p.network.auto_connector": logging.WARNING,
}


def log_level(name: str | None = None) -> int:
    """A level name (default: $MEDSWARM_LOG_LEVEL, else WARNING) as logging's number."""
    text = (name or os.environ.get(LOG_LEVEL_ENV) or DEFAULT_LEVEL).strip().upper()
    level = logging.getLevelName(text)
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {text!r}: DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def libp2p_verbosity(level: int | str | None = None) -> None:
    """Quiet py-libp2p's dial noise unless `level` (default `log_level()`) is DEBUG, in which
    case its loggers log at DEBUG through the root logger's handlers."""
    if os.environ.get("LIBP2P_DEBUG"):
        return  # libp2p's own switch, read when it was imported
    number = log_level(level) if not isinstance(level, int) else level
    verbose = number <= logging.DEBUG
    for name, quiet in QUIETED.items():
        if not verbose:
            logging.getLogger(name).setLevel(quiet)
        else:  # libp2p at the level asked for, its children inheriting it
            logging.getLogger(name).setLevel(number if name == "libp2p" else logging.NOTSET)
    # py-libp2p detaches its loggers from the root (propagate off, no handler): what passes
    # their levels reaches only logging's last-resort handler, bare lines on stderr. Asked for,
    # they go through the root logger's handlers, formatted like the node's own records.
    logging.getLogger("libp2p").propagate = verbose
