"""Exceptions with messages written for the person who has to act on them."""


class RecommenderError(Exception):
    """Base class: every error we raise on purpose says what to do next."""


class ConfigError(RecommenderError):
    """A setting or CLI flag has an unusable value."""


class ModelUnavailableError(RecommenderError):
    """A model's weights can't be found or loaded; never fall back silently."""


class ModelMismatchError(RecommenderError):
    """A collection was built with another model than the one requested."""


class NotFoundError(RecommenderError):
    """An item id or path is not in the collection."""


class MetadataError(RecommenderError):
    """The metadata table can't be read or lacks a required column."""


class StoreLockedError(RecommenderError):
    """The embedded Qdrant folder is in use by another process."""
