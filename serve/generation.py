"""The generator behind /v1/completions: request checks and token-by-token driving of runs.

Generations are not merged into one batch (each has its own KV cache); instead every run advances one token
per call on the scheduler's worker thread, so concurrent generations — and the encoder lanes — take turns
token by token, a timeout or a client that hangs up stops its run at the next token, and nothing runs on
the event loop. A run holds one admission slot (``--max-queue``) from its start to its last token.
"""
from __future__ import annotations


from onnxformer.errors import ErrorKind, ServingError
from onnxformer.runtime.generation import Generator, Run
from onnxformer.serve.batching import Scheduler
from onnxformer.serve.config import ServeConfig
from onnxformer.serve.schemas import CompletionRequest  # noqa: F401  (re-exported: the request it starts)


class GenerationService:
    """The generator, its limits, and the token-by-token driving of runs on the worker thread."""

    def __init__(self, generator: Generator, config: ServeConfig, scheduler: Scheduler):
        self.generator, self.config, self.scheduler = generator, config, scheduler
        self.name: str = generator.manifest.name or generator.directory.name
        self.task: str = generator.manifest.task

    def start(self, req: CompletionRequest) -> Run:
        """Check the request and tokenize its prompts (bad input → 4xx here, before any response starts)."""
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise ServingError('"prompt" is empty; send a string or a non-empty list of strings', ErrorKind.BAD_REQUEST)
        if req.n != 1:
            raise ServingError(f"n={req.n} is not supported; send n=1 (repeat the request with seeds instead)",
                               ErrorKind.BAD_REQUEST)
        if req.stream and len(prompts) != 1:
            raise ServingError(f"stream=true takes one prompt, got {len(prompts)}; send one request per prompt",
                               ErrorKind.BAD_REQUEST)
        if len(prompts) > self.config.max_texts:
            raise ServingError(f"{len(prompts)} prompts in one request; the limit is {self.config.max_texts}",
                               ErrorKind.PAYLOAD_TOO_LARGE)
        if req.max_tokens > self.config.max_new_tokens:
            raise ServingError(f"max_tokens={req.max_tokens} is over this server's limit of "
                               f"{self.config.max_new_tokens} ({ServeConfig.flag('max_new_tokens')})",
                               ErrorKind.UNPROCESSABLE)
        run = self.generator.start(prompts, req.max_tokens, **req.options())  # InputError → 400
        limit = self.config.max_tokens_per_text
        for i, n in enumerate(run.prompt_tokens):
            if limit is not None and n > limit:
                raise ServingError(f"prompt {i} has {n} tokens; the limit is {limit} (shorten it)",
                                   ErrorKind.UNPROCESSABLE)
        return run

    def admit(self) -> "Slot":
        """One admission slot per run, taken before any response starts: 429 at once when too many are in flight."""
        return Slot(self.scheduler)

    async def advance(self, run: Run) -> bool:
        """One more token of ``run`` on the worker thread; False once the run has finished."""
        return await self.scheduler.run_in_worker(run.step)


class Slot:
    """A run's place in the admission count; ``release`` may be called from several exits, counts once."""

    def __init__(self, scheduler: Scheduler):
        scheduler.admit(1)
        self.scheduler, self.held = scheduler, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.scheduler.release(1)
