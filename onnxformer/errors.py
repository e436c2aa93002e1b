"""Exception types. Every message says what went wrong and what to do about it."""
from __future__ import annotations


class OnnxformerError(Exception):
    """Base class: a user-facing error. The CLI prints its message as one line and exits 1."""


class CheckpointError(OnnxformerError):
    """The source checkpoint is missing, unreadable, unsafe or unsupported."""


class ExportError(OnnxformerError):
    """The ONNX export failed."""


class ValidationError(OnnxformerError):
    """An exported or quantized graph disagrees with its reference beyond tolerance."""


class ArtifactError(OnnxformerError):
    """An artifact directory or its manifest is missing, malformed, or fails verification."""


class IntegrityError(ArtifactError):
    """A file does not match the sha256 recorded in the manifest, or escapes the artifact directory."""


class QuantizationError(OnnxformerError):
    """A variant could not be produced or could not meet its accuracy budget."""


class ProviderError(OnnxformerError):
    """An execution provider is unavailable or cannot run the requested variant."""


class InputError(OnnxformerError, ValueError):
    """A call to the runtime got bad input (empty list, non-string, too long, wrong task)."""


class ServingError(OnnxformerError):
    """The server refused a request or cannot start; ``status`` is the HTTP status a request gets for it."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
