"""/v1/completions in OpenAI's shape: a whole completion, or server-sent events as the text is produced; ``n``
completions per prompt (rows of the batch), echo, logprobs, and the usage chunk of ``stream_options``."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from onnxformer.runtime.generation import Completion
from onnxformer.serve.generation import CompletionJob, Slot
from onnxformer.serve.httpio import openai_error, read_body, within
from onnxformer.serve.logprobs import Decode, completion_logprobs, token_decoder
from onnxformer.serve.schemas import CompletionRequest, parse_body
from onnxformer.serve.state import server_state
from onnxformer.serve.statuses import ErrorKind

router = APIRouter()


@router.post("/v1/completions")
async def completions(request: Request) -> Any:
    state = server_state(request)
    state.precheck("/v1/completions", generative=True)  # 503 or wrong task before reading a body we could not serve
    state.refuse_if_full()  # 429 before reading, parsing or tokenizing anything
    req = parse_body(await read_body(request, state.config), CompletionRequest)
    service = state.generation_service("/v1/completions", req.model)
    job = await asyncio.to_thread(service.start, req)  # tokenizing stays off the event loop
    reply = _Reply(service.name, job.usage_prompt_tokens, req.include_usage)
    choice = _Choices(job, token_decoder(service.generator.prompts.tokenizer))
    slot = service.admit()  # 429 now, before a stream's 200 is sent
    if req.stream:
        chunk = lambda row, piece, reason, scores: reply.body([choice(row, piece, reason, scores)])
        usage = (lambda tokens: reply.body([], tokens)) if req.include_usage else None
        return event_stream(_events(job, chunk, usage, time.monotonic() + state.config.timeout_s, slot), slot)
    done = await run_whole(job, state.config.timeout_s, slot)
    choices = [choice(i, c.text, c.finish_reason, c.scores) for i, c in enumerate(done)]
    return JSONResponse(reply.body(choices, sum(c.tokens for c in done)))


class _Choices:
    """A completion choice, whole or one streamed piece: echo's prompt text first, logprobs when asked for."""

    def __init__(self, job: CompletionJob, decode: Decode):
        self.job, self.decode = job, decode
        self.offsets = [0] * job.rows  # characters of each row's text so far (logprobs' text_offset)
        self.started = [False] * job.rows

    def __call__(self, row: int, text: str, finish_reason: str | None, scores: list[Any]) -> dict[str, Any]:
        job, logprobs = self.job, None
        if job.echo is not None and not self.started[row]:
            text = job.echo[row // job.n] + text
        self.started[row] = True
        if job.logprobs:
            logprobs = completion_logprobs(scores, self.decode, self.offsets[row])
            self.offsets[row] += sum(len(t) for t in logprobs["tokens"])
        else:
            self.offsets[row] += len(text)
        return {"index": row, "text": text, "finish_reason": finish_reason, "logprobs": logprobs}


async def run_whole(job: CompletionJob, timeout_s: float, slot: Slot) -> list[Completion]:
    """Every token of ``job`` under the timeout; the slot is freed (and the rows leave) however it ends."""
    try:
        await within(timeout_s, _drain(job))
    finally:
        job.cancel()
        slot.release()
    return job.completions()


def event_stream(events: AsyncIterator[str], slot: Slot) -> StreamingResponse:
    # the generator releases the slot when it ends; the background task when it never started
    return StreamingResponse(events, media_type="text/event-stream", background=BackgroundTask(slot.release),
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _drain(job: CompletionJob) -> None:
    while await job.advance():
        pass


Chunk = Callable[[int, str, "str | None", list[Any]], dict[str, Any]]  # (row, text, finish_reason, scores) → event
Usage = Callable[[int], dict[str, Any]]  # completion tokens → the last event (stream_options.include_usage)


async def _events(job: CompletionJob, chunk: Chunk, usage: Usage | None, deadline: float, slot: Slot) -> AsyncIterator[str]:
    """``data: {chunk}`` per row's piece of text, a last chunk per row with its finish reason, the usage when asked
    for (``stream_options.include_usage``: a chunk with no choices), ``data: [DONE]``. A client that disconnects
    cancels this generator (Starlette), which stops the job at the next step."""
    try:
        while True:
            try:
                more = await asyncio.wait_for(job.advance(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                message = "request timed out; lower max_tokens, or raise --timeout"
                yield _sse(openai_error(ErrorKind.TIMEOUT, message))
                return
            if not more:
                break
            for row in range(job.rows):
                piece, scores = job.take(row), job.take_scores(row)
                if piece or scores:
                    yield _sse(chunk(row, piece, None, scores))
        done = job.completions()
        for row, completion in enumerate(done):
            yield _sse(chunk(row, job.take(row), completion.finish_reason, job.take_scores(row)))
        if usage is not None:
            yield _sse(usage(sum(c.tokens for c in done)))
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()
        slot.release()


class _Reply:
    """The parts shared by a whole completion and each streamed chunk (OpenAI: same id and created)."""

    def __init__(self, model: str, prompt_tokens: int, include_usage: bool = False):
        self.model, self.prompt_tokens, self.include_usage = model, prompt_tokens, include_usage
        self.id, self.created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def body(self, choices: list[dict[str, Any]], completion_tokens: int | None = None) -> dict[str, Any]:
        """A whole completion (with usage), a streamed chunk (usage null when the client asked for usage), or the
        stream's usage chunk (no choices)."""
        out: dict[str, Any] = {"id": self.id, "object": "text_completion", "created": self.created,
                               "model": self.model, "choices": choices}
        if completion_tokens is not None:
            out["usage"] = usage(self.prompt_tokens, completion_tokens)
        elif self.include_usage:
            out["usage"] = None
        return out


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj)}\n\n"
