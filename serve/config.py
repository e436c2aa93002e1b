"""Server options: every limit has a safe default and is checked once, before the server starts."""
from __future__ import annotations

from dataclasses import dataclass

from onnxformer.errors import ServingError


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # loopback unless the user opts in to exposure
    port: int = 8000
    api_key: str | None = None
    batching: bool = True  # merge concurrent requests into one model call
    max_batch_size: int = 32  # texts merged into one model call
    # padded tokens per ONNX Runtime batch: the runtime sorts merged texts by length and cuts batches under
    # it; small batches of similar length beat one big padded batch on CPU (cache-sized activations)
    max_batch_tokens: int = 256
    max_delay_ms: float = 2.0  # while the worker is busy with other work, how long a batch waits to fill
    max_queue: int = 1024  # texts admitted but not yet running, plus generations in flight; beyond → 429
    max_texts: int = 64  # texts per request; beyond → 413
    max_tokens_per_text: int | None = None  # None: the model's own limit; beyond → 422
    max_new_tokens: int = 512  # generation: tokens one completion may ask for; beyond → 422
    max_body_bytes: int = 4 << 20  # request body; beyond → 413
    timeout_s: float = 30.0  # per request, queue wait included; beyond → 504
    graceful_s: float = 30.0  # shutdown waits this long for in-flight requests

    def check(self) -> "ServeConfig":
        positive = {
            "--port": self.port, "--max-batch-size": self.max_batch_size, "--max-batch-tokens": self.max_batch_tokens,
            "--max-queue": self.max_queue, "--max-texts": self.max_texts, "--max-body-bytes": self.max_body_bytes,
            "--timeout": self.timeout_s, "--max-new-tokens": self.max_new_tokens,
        }
        for flag, value in positive.items():
            if value <= 0:
                raise ServingError(f"{flag} must be > 0 (got {value})")
        if self.max_delay_ms < 0 or self.graceful_s < 0:
            raise ServingError("--max-delay-ms and --graceful-timeout must be >= 0")
        if self.max_tokens_per_text is not None and self.max_tokens_per_text <= 0:
            raise ServingError(f"--max-tokens-per-text must be > 0 (got {self.max_tokens_per_text})")
        if self.port > 65535:
            raise ServingError(f"--port must be <= 65535 (got {self.port})")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ServingError("--api-key must be at least 8 characters; use a random secret")
        return self
