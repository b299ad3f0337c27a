"""Exceptions with messages written for the person who has to act on them.

Each carries the exit code the command line ends with (README, "Exit codes"):
0 ok, 1 failure, 2 usage (a flag, a setting or an argument is wrong), 65 bad input
data, 75 temporarily unavailable (locked; try again), 130 interrupted.
"""


class RecommenderError(Exception):
    """Base class: every error we raise on purpose says what to do next."""

    exit_code = 1


class ConfigError(RecommenderError):
    """A setting or CLI flag has an unusable value."""

    exit_code = 2


class ModelUnavailableError(RecommenderError):
    """A model's weights can't be found or loaded; never fall back silently."""


class ModelMismatchError(RecommenderError):
    """A collection was built with another model than the one requested."""

    exit_code = 2


class NotFoundError(RecommenderError):
    """An item id or path is not in the collection."""

    exit_code = 2


class MetadataError(RecommenderError):
    """The metadata table can't be read or lacks a required column."""

    exit_code = 65


class StoreLockedError(RecommenderError):
    """The embedded Qdrant folder is in use by another process."""

    exit_code = 75
