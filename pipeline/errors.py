"""Errors the command line turns into one clear line and a non-zero exit."""


class PipelineError(Exception):
    """A user-facing failure: bad config, bad data, missing model files.

    `exit_code` is the command's exit status; `resumable` says whether rerunning with `--resume` continues the work.
    """

    exit_code = 2
    resumable = False


class ConfigError(PipelineError):
    """The configuration is invalid (unknown key, wrong type, unreadable YAML)."""


class DataError(PipelineError):
    """Input data is unreadable or violates the schema.

    `code` names the kind of fault (`invalid_json`, `missing_label`, ...) so that reports count faults by code,
    never by matching the wording of the message.
    """

    def __init__(self, message: str, code: str = "other") -> None:
        super().__init__(message)
        self.code = code


class ModelError(PipelineError):
    """A model cannot be loaded, found or reproduced."""
