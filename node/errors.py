"""Errors of the node package: one root, `NodeError`, and a subclass per kind of failure."""


class NodeError(Exception):
    """Root of every error the node package raises on purpose."""


class DataError(NodeError):
    """A data file or the consortium's data schema is unusable.

    The message names the file, the row or column and the rule that failed, so a hospital's
    IT team can fix the file without reading a traceback.
    """


class SchemaError(DataError):
    """The consortium's data schema file is invalid (bad TOML, unknown key, wrong type)."""


class ConfigError(NodeError):
    """A node config file is invalid: the message names the file, the key and what was expected."""


class CheckpointError(NodeError):
    """A checkpoint on disk is unreadable or inconsistent."""


class AnalyticsError(NodeError):
    """A federated analysis cannot be answered: an unknown column, a formula or outcome the
    model cannot take, a singular design, or a refusal under the disclosure rule. The message
    names the cause."""
