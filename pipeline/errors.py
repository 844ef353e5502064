"""Errors the command line turns into one clear line and a non-zero exit."""


class PipelineError(Exception):
    """A user-facing failure: bad config, bad data, missing model files."""


class ConfigError(PipelineError):
    """The configuration is invalid (unknown key, wrong type, unreadable YAML)."""


class DataError(PipelineError):
    """Input data is unreadable or violates the schema."""


class ModelError(PipelineError):
    """A model cannot be loaded, found or reproduced."""
