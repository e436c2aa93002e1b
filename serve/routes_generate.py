"""/v1/completions in OpenAI's shape: a whole completion, or server-sent events as the text is produced."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from onnxformer.serve.statuses import ErrorKind
from onnxformer.runtime.generation import Completion
from onnxformer.serve.generation import GenerationService, Job, Slot
from onnxformer.serve.httpio import openai_error, read_body, within
from onnxformer.serve.schemas import CompletionRequest, parse_body
from onnxformer.serve.state import server_state

router = APIRouter()


@router.post("/v1/completions")
async def completions(request: Request) -> Any:
    state = server_state(request)
    state.precheck("/v1/completions", generative=True)  # 503 or wrong task before reading a body we could not serve
    state.refuse_if_full()  # 429 before reading, parsing or tokenizing anything
    req = parse_body(await read_body(request, state.config), CompletionRequest)
    service = state.generation_service("/v1/completions", req.model)
    job = await asyncio.to_thread(service.start, req)  # tokenizing stays off the event loop
    reply = _Reply(service.name, sum(job.prompt_tokens))
    slot = service.admit()  # 429 now, before a stream's 200 is sent
    if req.stream:
        chunk = lambda piece, reason, tokens: reply.body([_choice(0, piece, reason)], tokens)
        return event_stream(_events(job, chunk, time.monotonic() + state.config.timeout_s, slot), slot)
    done = await run_whole(job, state.config.timeout_s, slot)
    choices = [_choice(i, c.text, c.finish_reason) for i, c in enumerate(done)]
    return JSONResponse(reply.body(choices, sum(c.tokens for c in done)))


async def run_whole(job: Job, timeout_s: float, slot: Slot) -> list[Completion]:
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


async def _drain(job: Job) -> None:
    while await job.advance():
        pass


Chunk = Callable[[str, "str | None", "int | None"], dict[str, Any]]  # (text, finish_reason, tokens) → event


async def _events(job: Job, chunk: Chunk, deadline: float, slot: Slot) -> AsyncIterator[str]:
    """``data: {chunk}`` per piece of text, a last chunk with the finish reason and usage, ``data: [DONE]``.
    A client that disconnects cancels this generator (Starlette), which stops the job at the next step."""
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
            if piece := job.take():
                yield _sse(chunk(piece, None, None))
        done = job.completions()[0]
        yield _sse(chunk(job.take(), done.finish_reason, done.tokens))
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()
        slot.release()


class _Reply:
    """The parts shared by a whole completion and each streamed chunk (OpenAI: same id and created)."""

    def __init__(self, model: str, prompt_tokens: int):
        self.model, self.prompt_tokens = model, prompt_tokens
        self.id, self.created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def body(self, choices: list[dict[str, Any]], completion_tokens: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "object": "text_completion", "created": self.created,
                               "model": self.model, "choices": choices}
        if completion_tokens is not None:
            out["usage"] = {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                            "total_tokens": self.prompt_tokens + completion_tokens}
        return out


def _choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "finish_reason": finish_reason, "logprobs": None}


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj)}\n\n"
