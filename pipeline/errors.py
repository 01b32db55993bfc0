"""Errors of the orchestration layer.  Stage cores raise ``stages._common.StageError``."""


class PipelineError(Exception):
    """A problem the user can fix; printed as one red line, exit code 1."""


class ConfigError(PipelineError):
    """pipeline.toml or a CLI option is wrong (unknown key, bad value)."""


class CacheError(PipelineError):
    """The artifact cache is missing something a stage needs, or is locked."""
