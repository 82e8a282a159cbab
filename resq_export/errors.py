"""User-facing errors: the CLI turns these into a message and a non-zero exit."""


class ResQError(Exception):
    """Base class of every error caused by bad input or configuration."""

    exit_code = 1  # what the CLI exits with


class ModelLoadError(ResQError):
    """The model source is missing, corrupt, or of an unsupported architecture."""


class ConfigError(ResQError):
    """A setting that cannot work: unsupported bit width, shape that does not fit, ..."""


class ArtifactError(ResQError):
    """A quantised artifact is missing, corrupt, or from another schema version."""
