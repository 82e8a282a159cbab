"""Every error class of the project. ResQError and its subclasses are the user-facing ones: the CLI
turns them into one line and a non-zero exit; the others are internal and caught where they arise."""


class ResQError(Exception):
    """Base class of every error caused by bad input or configuration."""

    exit_code = 1  # what the CLI exits with


class ModelLoadError(ResQError):
    """The model source is missing, corrupt, or of an unsupported architecture."""


class ConfigError(ResQError):
    """A setting that cannot work: unsupported bit width, shape that does not fit, ..."""


class ArtifactError(ResQError):
    """A quantised artifact is missing, corrupt, or from another schema version."""


class DataError(ResQError, ValueError):
    """Unusable calibration/evaluation data; the message is meant for the user."""


class NumericalError(ResQError):
    """NaN/Inf in calibration activations, or a Hessian that damping cannot rescue."""


class ResumeError(ResQError):
    """The work folder belongs to a different run."""


class TensorRTMissing(ResQError):
    """TensorRT (or the plugin library) is not available here; the CLI exits with code 2."""

    exit_code = 2


class HessianError(ValueError):
    """The Hessian is not positive definite even after damping (internal: quantize names the layer)."""


class NativeError(RuntimeError):
    """A native (C++/CUDA) entry point returned an error status."""

    STATUS = {0: "ok", 1: "invalid argument or shape", 2: "unsupported by this kernel", 3: "CUDA error",
              4: "no CUDA device"}

    def __init__(self, function: str, code: int):
        super().__init__(f"{function} failed: {self.STATUS.get(code, 'unknown status')} (code {code})")
        self.code = code
