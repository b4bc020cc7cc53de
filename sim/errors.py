"""The simulator's errors. Every one is a SimError, so a caller (the command line) catches the
root and prints the message; each names what failed and where."""


class SimError(Exception):
    """The root of the simulator's errors."""


class AlreadyExists(SimError, FileExistsError):
    """A run folder or file is already there; the simulator does not overwrite it."""
