"""Exception types. Every message says what went wrong and what to do about it; what went wrong is carried
as a type (and, for bad input, an ``InputKind``), never left for a caller to read out of the message. These
know nothing of HTTP: the server maps them to statuses in one table (``onnxformer.serve.statuses``)."""
from __future__ import annotations

from enum import Enum


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


class InputKind(str, Enum):
    """What was wrong with the input: the server's status for an ``InputError`` follows from this alone."""

    MALFORMED = "malformed"  # wrong type, empty, out of range, an unknown option or name
    TOO_LONG = "too_long"  # an item has more tokens than the model or the batch can hold
    WRONG_TASK = "wrong_task"  # the call needs a model of another task


class InputError(OnnxformerError, ValueError):
    """A call to the runtime got bad input (empty list, non-string, too long, wrong task); ``kind`` says which."""

    def __init__(self, message: str, kind: InputKind = InputKind.MALFORMED):
        super().__init__(message)
        self.kind = kind
