"""The kinds of error a client can be told about, and (once, here) what each one gets: HTTP status, headers,
OpenAI error type, gRPC code. The core raises typed errors that know nothing of HTTP; this table decides."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from onnxformer.errors import ArtifactError, InputError, InputKind, OnnxformerError, ProviderError


# --- error kinds: what a refusal means, and (once, here) what a client gets for it --------------------------
class ErrorKind(str, Enum):
    """What went wrong, for whoever reports it: the server maps each kind to a status and error bodies through
    ``KINDS`` (like text-embeddings-inference's one ``From<TextEmbeddingsError>``); raise sites name a kind."""

    BAD_REQUEST = "bad_request"  # malformed or invalid input (also: a bad CLI option)
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PAYLOAD_TOO_LARGE = "payload_too_large"  # body, texts or tensors over a limit
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNPROCESSABLE = "unprocessable"  # well-formed but over a per-item limit (tokens, max_tokens)
    TOO_MANY_REQUESTS = "too_many_requests"  # the queue is full, or this client holds too many connections
    REQUEST_TIMEOUT = "request_timeout"  # the body did not arrive in time
    CLIENT_CLOSED = "client_closed"  # the client hung up before the answer (nginx's 499; nobody reads it)
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"  # loading, failed to load, shutting down
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class KindInfo:
    status: int  # HTTP status
    openai_type: str  # ``error.type`` in OpenAI's error object
    headers: tuple[tuple[str, str], ...] = ()  # sent with the error response
    grpc: str = "INTERNAL"  # grpc.StatusCode name, for KServe v2 over gRPC


_RETRY = (("Retry-After", "1"),)
KINDS: dict[ErrorKind, KindInfo] = {
    ErrorKind.BAD_REQUEST: KindInfo(400, "invalid_request_error", grpc="INVALID_ARGUMENT"),
    ErrorKind.UNAUTHORIZED: KindInfo(401, "authentication_error", (("WWW-Authenticate", "Bearer"),), "UNAUTHENTICATED"),
    ErrorKind.NOT_FOUND: KindInfo(404, "not_found_error", grpc="NOT_FOUND"),
    ErrorKind.METHOD_NOT_ALLOWED: KindInfo(405, "invalid_request_error", grpc="UNIMPLEMENTED"),
    ErrorKind.PAYLOAD_TOO_LARGE: KindInfo(413, "invalid_request_error", grpc="RESOURCE_EXHAUSTED"),
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: KindInfo(415, "invalid_request_error", grpc="INVALID_ARGUMENT"),
    ErrorKind.UNPROCESSABLE: KindInfo(422, "invalid_request_error", grpc="INVALID_ARGUMENT"),
    ErrorKind.TOO_MANY_REQUESTS: KindInfo(429, "rate_limit_error", _RETRY, "RESOURCE_EXHAUSTED"),
    ErrorKind.REQUEST_TIMEOUT: KindInfo(408, "invalid_request_error", (("Connection", "close"),), "DEADLINE_EXCEEDED"),
    ErrorKind.CLIENT_CLOSED: KindInfo(499, "invalid_request_error", grpc="CANCELLED"),
    ErrorKind.INTERNAL: KindInfo(500, "server_error"),
    ErrorKind.UNAVAILABLE: KindInfo(503, "server_error", _RETRY, "UNAVAILABLE"),
    ErrorKind.TIMEOUT: KindInfo(504, "server_error", grpc="DEADLINE_EXCEEDED"),
}

# The library's own exceptions, most specific first. A kind of status >= 500 is a server-side failure:
# the server logs it and answers without its message (which may name server paths).
INPUT_KINDS: dict[InputKind, ErrorKind] = {
    InputKind.MALFORMED: ErrorKind.BAD_REQUEST,
    InputKind.TOO_LONG: ErrorKind.UNPROCESSABLE,  # well-formed, over what the model or the batch holds
    InputKind.WRONG_TASK: ErrorKind.BAD_REQUEST,
}
EXCEPTION_KINDS: tuple[tuple[type[Exception], ErrorKind], ...] = (
    (ArtifactError, ErrorKind.INTERNAL),  # IntegrityError included
    (ProviderError, ErrorKind.INTERNAL),
    (OnnxformerError, ErrorKind.INTERNAL),
)


def error_kind(error: BaseException) -> ErrorKind:
    """The kind of any exception: a ServingError's own, a library exception's from the table, else internal."""
    if isinstance(error, ServingError):
        return error.kind
    if isinstance(error, InputError):  # the runtime refused the caller's input
        return INPUT_KINDS[error.kind]
    return next((kind for cls, kind in EXCEPTION_KINDS if isinstance(error, cls)), ErrorKind.INTERNAL)


def kind_for_status(status: int) -> ErrorKind:
    """The kind of a status that did not come from us (the framework's 404 route / 405 method)."""
    found = next((kind for kind, info in KINDS.items() if info.status == status), None)
    return found or (ErrorKind.BAD_REQUEST if status < 500 else ErrorKind.INTERNAL)


class ServingError(OnnxformerError):
    """The server refused a request or cannot start; ``kind`` says why (and so which HTTP status it gets)."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.BAD_REQUEST):
        super().__init__(message)
        self.kind = kind

    @property
    def status(self) -> int:
        return KINDS[self.kind].status
