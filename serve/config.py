"""Server options: every limit is declared once here — default, CLI flag and help — and checked once, before
the server starts. ``onnxformer serve``'s flags are generated from these fields (serve/cli.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from onnxformer.errors import InputError
from onnxformer.runtime.batching import DEFAULT_MAX_BATCH_SIZE
from onnxformer.runtime.generation.scheduler import SlotLimits
from onnxformer.serve.statuses import ServingError


def option(default: Any, help: str, *, flag: str | None = None, env: str | None = None) -> Any:
    """A config field with its CLI flag (default ``--field-name``; a bool that defaults to True gets
    ``--no-...``), help text, and the environment variable that gives the CLI default (not the field's)."""
    return field(default=default, metadata={"help": help, "flag": flag, "env": env})


@dataclass(frozen=True)
class ServeConfig:
    host: str = option("127.0.0.1", "bind address (default loopback; 0.0.0.0 exposes it)")
    port: int = option(8000, "TCP port to listen on")
    docs: bool = option(False, "serve the OpenAPI description at /openapi.json and a browsable page at /docs")
    truncate: bool = option(False, "cut texts over the token limit instead of answering 422 (TEI's --auto-truncate)")
    served_model_name: str | None = option(None, "the name each model is served under, comma-separated in the "
                                                 "order of the directories (default: each manifest's name)")
    grpc_port: int | None = option(None, "also serve KServe v2 over gRPC on this port (what tritonclient.grpc "
                                         "speaks; default: off)")
    api_key: str | None = option(None, "require 'Authorization: Bearer KEY' "
                                       "(default: $ONNXFORMER_API_KEY; none = open)", env="ONNXFORMER_API_KEY")
    batching: bool = option(True, "run each request alone (no dynamic batching)", flag="--no-batching")
    max_batch_size: int = option(DEFAULT_MAX_BATCH_SIZE, "texts merged into one model call")
    # the runtime sorts merged texts by length and cuts batches under it; small batches of similar length beat
    # one big padded batch on CPU (cache-sized activations)
    max_batch_tokens: int = option(
        256, "padded tokens per ONNX Runtime batch (merged texts are length-sorted under it)")
    max_delay_ms: float = option(2.0, "how long a batch waits to fill while the model is busy with other work")
    max_queue: int = option(1024, "queued texts (plus generations in flight) before 429")
    max_texts: int = option(64, "texts per request before 413")
    max_tokens_per_text: int | None = option(None, "tokens per text before 422 (default: model limit)")
    max_new_tokens: int = option(512, "generation: max_tokens per completion before 422")
    continuous_batching: bool = option(True, "generation: runs take turns token by token instead of sharing "
                                             "one decode batch", flag="--no-continuous-batching")
    max_slots: int = option(SlotLimits.max_slots, "generation: rows in the decode batch (more requests wait their turn)")
    max_cached_tokens: int = option(
        SlotLimits.max_cached_tokens,
        "generation: KV-cache tokens of the decode batch (rows x shared width; preallocated; a prompt plus "
              "max_tokens over it is refused with 422)")
    prefill_chunk: int = option(SlotLimits.prefill_chunk, "generation: prompt tokens per prefill call, between decode steps "
                                    "(0: a whole prompt at once)")
    max_body_bytes: int = option(4 << 20, "request body size before 413")
    timeout_s: float = option(30.0, "seconds per request (queue wait included) before 504", flag="--timeout")
    body_timeout_s: float = option(10.0, "seconds to receive a request body before 408", flag="--body-timeout")
    keep_alive_s: float = option(5.0, "seconds an idle keep-alive connection stays open", flag="--keep-alive")
    max_connections: int = option(512, "open connections before new ones get 503")
    max_connections_per_client: int = option(
        64, "requests in flight from one client address before 429 (slow clients cannot take every slot)")
    max_chars_per_token: int = option(
        32, "characters allowed per token of the limit: longer texts get 422 before they are tokenized")
    graceful_s: float = option(30.0, "seconds to finish in-flight requests on stop", flag="--graceful-timeout")
    strict: bool = option(False, "refuse to start when the variant the runtime chose fails to open (a damaged "
                                 "int8 file, say); default: serve the next best variant and name the one passed over, "
                                 "and why, in the banner, the WARNING log, /v2/models/{name} and /metrics")

    @classmethod
    def flag(cls, name: str) -> str:
        """The CLI flag of field ``name`` (what error messages tell the user to change)."""
        f = next(f for f in fields(cls) if f.name == name)
        if f.metadata.get("flag"):
            return f.metadata["flag"]
        return "--" + name.replace("_", "-")

    def slot_limits(self) -> SlotLimits:
        """The decode batch's limits (the runtime's ``SlotLimits`` checks them; its refusal names our flags)."""
        try:
            return SlotLimits(self.max_slots, self.max_cached_tokens, self.prefill_chunk)
        except InputError as e:
            flags = ", ".join(self.flag(n) for n in ("max_slots", "max_cached_tokens", "prefill_chunk"))
            raise ServingError(f"{flags}: {e}") from None

    def check(self) -> ServeConfig:
        positive = ("port", "max_batch_size", "max_batch_tokens", "max_queue", "max_texts", "max_body_bytes",
                    "timeout_s", "max_new_tokens", "body_timeout_s", "keep_alive_s", "max_connections",
                    "max_connections_per_client", "max_chars_per_token")
        for name in positive:
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):  # nan and inf too: "nan" would turn a timeout off
                raise ServingError(f"{self.flag(name)} must be a finite number > 0 (got {value})")
        for name in ("max_delay_ms", "graceful_s"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ServingError(f"{self.flag(name)} must be a finite number >= 0 (got {value})")
        self.slot_limits()
        if self.max_tokens_per_text is not None and self.max_tokens_per_text <= 0:
            raise ServingError(f"{self.flag('max_tokens_per_text')} must be > 0 (got {self.max_tokens_per_text})")
        if self.port > 65535:
            raise ServingError(f"{self.flag('port')} must be <= 65535 (got {self.port})")
        if self.grpc_port is not None and not (0 < self.grpc_port <= 65535 and self.grpc_port != self.port):
            raise ServingError(f"{self.flag('grpc_port')} must be a port other than {self.flag('port')}, "
                               f"1 to 65535 (got {self.grpc_port})")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ServingError(f"{self.flag('api_key')} must be at least 8 characters; use a random secret")
        return self
