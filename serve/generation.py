"""The generator behind /v1/completions and /v1/chat/completions: request checks and the driving of generations.

Requests share one continuously batched decode step: a driver task on the event loop runs the runtime
scheduler's ``step()`` on the worker thread while any request is running or waiting, and wakes each request
whose rows changed (decoders: runtime/generation/slots.py or scheduler.py; seq2seq: seq2seq_batch.py). Under
``--no-continuous-batching``, and for a seq2seq artifact exported before its step graph could batch, each run
advances one token per worker call instead, taking turns. Either way a
timeout or a client that hangs up stops its request at the next step, and nothing runs on the event loop.
A request holds one admission slot (``--max-queue``) from its start to its last token.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from onnxformer.errors import ArtifactError, InputError
from onnxformer.runtime.generation import Completion, Generator, Run
from onnxformer.runtime.generation.scheduler import Row, SlotLimits
from onnxformer.runtime.generation.scheduler import Scheduler as BatchScheduler
from onnxformer.runtime.generation.schedulers import batch_scheduler
from onnxformer.serve.batcher import Lanes
from onnxformer.serve.chat import load_chat_template
from onnxformer.serve.config import ServeConfig
from onnxformer.serve.metrics import Metrics
from onnxformer.serve.schemas import CompletionRequest, as_list
from onnxformer.serve.statuses import ErrorKind, ServingError, error_kind

log = logging.getLogger("onnxformer.serve")


def _batch(generator: Generator, limits: SlotLimits) -> BatchScheduler | None:
    """The continuous batch for ``generator``, or None (logged) for a seq2seq artifact exported before it could batch."""
    try:
        batch = batch_scheduler(generator, limits)  # a decoder's on its slot graph when the artifact has one
    except ArtifactError as e:
        log.warning("continuous batching is off, requests take turns: %s", e)
        return None
    if not generator.batch_invariant:
        log.warning("variant %s quantizes activations with one scale per call, so in the continuous batch a "
                    "request's tokens depend on the requests batched with it; serve fp32, fp16 or int4, or pass "
                    "--no-continuous-batching, for output identical to a solo run", generator.variant)
    return batch


class GenerationService:
    """The generator, its limits, and the driving of generations on the worker thread: requests share one
    continuously batched decode step (``batch_scheduler``); under ``--no-continuous-batching`` (or for a seq2seq
    artifact too old to batch) they take turns token by token."""

    def __init__(self, generator: Generator, config: ServeConfig, scheduler: Lanes,
                 metrics: Metrics | None = None):
        self.generator, self.config, self.scheduler, self.metrics = generator, config, scheduler, metrics
        self.name: str = generator.manifest.name or generator.directory.name
        self.task: str = generator.manifest.task
        self.batch: BatchScheduler | None = None
        if config.continuous_batching:
            self.batch = _batch(generator, config.slot_limits())
        batch = self.batch
        if batch is not None:
            if metrics is not None:
                batch.on_step = metrics.observe_batch
                metrics.track_generation(lambda: len(batch.running), lambda: len(batch.waiting), config.max_slots)
        self._driver: asyncio.Task | None = None
        self.chat = load_chat_template(generator.directory)  # None: the chat route says the model has none

    def limits(self) -> dict[str, Any]:
        """What a client may ask for (model metadata)."""
        out: dict[str, Any] = {"max_new_tokens": self.config.max_new_tokens,
                               "max_positions": self.generator.max_positions,
                               "continuous_batching": self.batch is not None,
                               "batch_invariant": self.batch is None or self.generator.batch_invariant}
        if self.batch is not None:
            out.update(max_slots=self.config.max_slots, max_cached_tokens=self.config.max_cached_tokens,
                       prefill_chunk=self.config.prefill_chunk)
        return out

    def start(self, req: CompletionRequest, prompts: list[Any] | None = None) -> CompletionJob:
        """Check the request and tokenize its prompts (bad input → 4xx here, before any response starts). Each
        prompt (a text, or a list of token ids) runs ``n`` rows: row ``i * n + j`` is prompt ``i``'s ``j``-th
        completion, seeded ``seed + j`` when a seed is given (so every row is reproducible on its own)."""
        prompts = prompts if prompts is not None else as_list(req.prompt)
        if not prompts:
            raise ServingError('"prompt" is empty; send a string or a non-empty list of strings', ErrorKind.BAD_REQUEST)
        rows = len(prompts) * req.n
        if rows > self.config.max_texts:
            raise ServingError(f"{len(prompts)} prompts × n={req.n} = {rows} completions in one request; the limit "
                               f"is {self.config.max_texts}", ErrorKind.PAYLOAD_TOO_LARGE)
        if req.max_tokens > self.config.max_new_tokens:
            raise ServingError(f"max_tokens={req.max_tokens} is over this server's limit of "
                               f"{self.config.max_new_tokens} ({ServeConfig.flag('max_new_tokens')})",
                               ErrorKind.UNPROCESSABLE)
        self._check_bias(req)
        job = self._job(prompts, req)
        limit = self.config.max_tokens_per_text
        for i, n in enumerate(job.prompt_tokens[::req.n]):
            if limit is not None and n > limit:
                raise ServingError(f"prompt {i} has {n} tokens; the limit is {limit} (shorten it)",
                                   ErrorKind.UNPROCESSABLE)
        job.n, job.logprobs = req.n, req.logprobs is not None
        job.echo = [self._text(p) for p in prompts] if req.echo else None
        return job

    def _check_bias(self, req: CompletionRequest) -> None:
        vocab = self.generator.vocab_size or self.generator.prompts.tokenizer.get_vocab_size(with_added_tokens=True)
        over = [t for t in req.options()["logit_bias"] if t >= vocab]
        if over:
            raise ServingError(f"logit_bias names token {over[0]}, outside this model's vocabulary (0..{vocab - 1})",
                               ErrorKind.BAD_REQUEST)

    def _text(self, prompt: Any) -> str:
        """A prompt as text (echo): itself, or its token ids decoded."""
        return prompt if isinstance(prompt, str) else self.generator.prompts.tokenizer.decode(prompt)

    def _job(self, prompts: list[Any], req: CompletionRequest) -> CompletionJob:
        n, options = req.n, req.options()
        if self.batch is None:
            rows = [p for p in prompts for _ in range(n)]
            return RunJob(self, self.generator.start(rows, req.max_tokens, **options))  # InputError → 400
        seqs = []
        for prompt in prompts:
            for j in range(n):
                seed = options["seed"] + j if options["seed"] is not None else None
                try:
                    seqs.append(self.batch.prepare(prompt, req.max_tokens, **{**options, "seed": seed}))
                except InputError as e:  # the kind decides the status (a prompt over what the batch holds: 422)
                    raise ServingError(str(e), error_kind(e)) from None
        return BatchJob(self, seqs)

    def admit(self) -> Slot:
        """One admission slot per run, taken before any response starts: 429 at once when too many are in flight."""
        return Slot(self.scheduler)

    async def advance(self, run: Run) -> bool:
        """One more token of ``run`` on the worker thread; False once the run has finished."""
        return await self.scheduler.run_in_worker(run.step)

    # --- the continuous batch's driver (on the event loop; the steps run on the worker) -------------------
    def enqueue(self, job: BatchJob) -> None:
        assert self.batch is not None
        for seq in job.seqs:
            self.batch.enqueue(seq)
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(self._drive())

    async def _drive(self) -> None:
        batch = self.batch
        assert batch is not None
        while batch.busy:
            try:
                changed = await self.scheduler.run_in_worker(batch.step)
            except Exception as e:  # a bug in the scheduler: fail what it holds, keep the server up
                log.exception("generation step failed")
                changed = batch.reset(e)
            for seq in changed:
                self._observe(seq)
                if seq.listener is not None:
                    seq.listener.set()

    def _observe(self, seq: Row) -> None:
        if self.metrics is None:
            return
        times, seen = seq.token_times, seq.observed
        if seen == 0 and times:
            self.metrics.first_token.observe(times[0] - seq.submitted)
        for a, b in zip(times[max(seen - 1, 0):], times[max(seen, 1):]):
            self.metrics.inter_token.observe(b - a)
        self.metrics.generated_tokens.inc(len(times) - seen)
        seq.observed = len(times)


class CompletionJob:
    """One request's generation, whichever way it is driven: ``advance`` until False, ``take`` text as it
    becomes final, ``completions`` at the end, ``cancel`` on any early exit (timeout, disconnect)."""

    prompt_tokens: list[int]  # per row
    n: int = 1  # rows per prompt
    echo: list[str] | None = None  # per prompt, the text a completion with echo starts with
    logprobs: bool = False  # whether the rows record their tokens' scores

    @property
    def rows(self) -> int:
        return len(self.prompt_tokens)

    @property
    def usage_prompt_tokens(self) -> int:
        """The prompts' tokens, each prompt counted once however many completions it has (OpenAI's usage)."""
        return sum(self.prompt_tokens[::self.n])

    async def advance(self) -> bool:
        raise NotImplementedError

    def take(self, row: int = 0) -> str:
        raise NotImplementedError

    def take_scores(self, row: int = 0) -> list[Any]:
        raise NotImplementedError

    def completions(self) -> list[Completion]:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError


class RunJob(CompletionJob):
    """Turn-taking: the run advances one token per worker call, between other runs' tokens."""

    def __init__(self, service: GenerationService, run: Run):
        self.service, self.run, self.prompt_tokens = service, run, run.prompt_tokens
        self.started, self.tokens = time.monotonic(), 0
        self.last: float | None = None

    async def advance(self) -> bool:
        more = await self.service.advance(self.run)
        self._observe()
        return more

    def _observe(self) -> None:
        """The same token metrics as the continuous batch's (one step makes a token per unfinished row)."""
        metrics, tokens = self.service.metrics, sum(len(s.ids) for s in self.run.streams)
        if metrics is None or tokens == self.tokens:
            return
        now = time.monotonic()
        if self.last is None:
            metrics.first_token.observe(now - self.started)
        else:
            metrics.inter_token.observe(now - self.last)
        metrics.generated_tokens.inc(tokens - self.tokens)
        self.last, self.tokens = now, tokens

    def take(self, row: int = 0) -> str:
        return self.run.take(row)

    def take_scores(self, row: int = 0) -> list[Any]:
        return self.run.streams[row].take_scores()

    def completions(self) -> list[Completion]:
        return self.run.completions()

    def cancel(self) -> None:
        pass  # a run that is not advanced stops by itself


class BatchJob(CompletionJob):
    """Rows of the continuous batch: woken whenever the driver's step changed one of them."""

    def __init__(self, service: GenerationService, seqs: list[Row]):
        self.service, self.seqs = service, seqs
        self.prompt_tokens = [len(s.prompt) for s in seqs]
        self.changed = asyncio.Event()
        for seq in seqs:
            seq.listener = self.changed
        self.queued = False

    async def advance(self) -> bool:
        if not self.queued:
            self.queued = True
            self.service.enqueue(self)
        if all(s.done for s in self.seqs):
            return False
        await self.changed.wait()
        self.changed.clear()
        error = next((s.error for s in self.seqs if s.error is not None), None)
        if error is not None:
            raise error
        return True

    def take(self, row: int = 0) -> str:
        return self.seqs[row].take()

    def take_scores(self, row: int = 0) -> list[Any]:
        return self.seqs[row].stream.take_scores()

    def completions(self) -> list[Completion]:
        return [Completion(s.stream.text, len(s.ids), s.finish_reason or "length", list(s.stream.scores))
                for s in self.seqs]

    def cancel(self) -> None:
        for seq in self.seqs:
            seq.cancel()


class Slot:
    """A run's place in the admission count; ``release`` may be called from several exits, counts once."""

    def __init__(self, scheduler: Lanes):
        scheduler.admit(1)
        self.scheduler, self.held = scheduler, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.scheduler.release(1)
