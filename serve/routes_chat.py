"""/v1/chat/completions in OpenAI's shape: messages rendered with the model's chat template, then generated
like a completion (the same admission, limits, timeout and continuous batch); whole, or streamed ``delta``s; ``n``
choices, logprobs, and the usage chunk of ``stream_options``."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from onnxformer.serve.chat import check_messages
from onnxformer.serve.httpio import read_body
from onnxformer.serve.logprobs import Decode, chat_logprobs, token_decoder
from onnxformer.serve.routes_generate import _events, event_stream, run_whole, usage
from onnxformer.serve.schemas import ChatRequest, parse_body
from onnxformer.serve.state import server_state
from onnxformer.serve.statuses import ErrorKind, ServingError

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    state = server_state(request)
    state.precheck("/v1/chat/completions", generative=True)
    state.refuse_if_full()  # 429 before reading, parsing or rendering anything, as /v1/completions
    chat = parse_body(await read_body(request, state.config), ChatRequest)
    service = state.generation_service("/v1/chat/completions", chat.model)
    if service.chat is None:
        raise ServingError(f"{service.name!r} has no chat template (its tokenizer_config.json has no chat_template "
                           "and there is no chat_template.jinja); use /v1/completions with your own prompt",
                           ErrorKind.BAD_REQUEST)
    if chat.max_tokens is not None and chat.max_completion_tokens is not None \
            and chat.max_tokens != chat.max_completion_tokens:
        raise ServingError("max_tokens and max_completion_tokens disagree; send one of them", ErrorKind.BAD_REQUEST)
    prompt = service.chat.render(check_messages(chat.messages))
    req = chat.completion(prompt)
    job = await asyncio.to_thread(service.start, req)
    reply = _ChatReply(service.name, job.usage_prompt_tokens, job.rows, chat.include_usage,
                       token_decoder(service.generator.prompts.tokenizer) if job.logprobs else None)
    slot = service.admit()
    if chat.stream:
        last = reply.usage_chunk if chat.include_usage else None
        return event_stream(_events(job, reply.chunk, last, time.monotonic() + state.config.timeout_s, slot), slot)
    done = await run_whole(job, state.config.timeout_s, slot)
    choices = [{"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason,
                "logprobs": reply.logprobs(c.scores)} for i, c in enumerate(done)]
    return JSONResponse({**reply.head("chat.completion"), "choices": choices,
                         "usage": usage(reply.prompt_tokens, sum(c.tokens for c in done))})


class _ChatReply:
    def __init__(self, model: str, prompt_tokens: int, rows: int, include_usage: bool, decode: Decode | None):
        self.model, self.prompt_tokens, self.include_usage, self.decode = model, prompt_tokens, include_usage, decode
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        self.started = [False] * rows

    def head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def logprobs(self, scores: list[Any]) -> dict[str, Any] | None:
        return chat_logprobs(scores, self.decode) if self.decode is not None else None

    def chunk(self, row: int, piece: str, finish_reason: str | None, scores: list[Any]) -> dict[str, Any]:
        """A streamed chunk: a row's first ``delta`` names the role; its last carries the finish reason."""
        delta: dict[str, Any] = {"content": piece} if piece or finish_reason is None else {}
        if not self.started[row]:
            delta["role"], self.started[row] = "assistant", True
        out = {**self.head("chat.completion.chunk"), "choices": [{"index": row, "delta": delta,
                                                                  "finish_reason": finish_reason,
                                                                  "logprobs": self.logprobs(scores)}]}
        if self.include_usage:
            out["usage"] = None
        return out

    def usage_chunk(self, tokens: int) -> dict[str, Any]:
        """The stream's last chunk under ``stream_options.include_usage``: no choices, the usage."""
        return {**self.head("chat.completion.chunk"), "choices": [], "usage": usage(self.prompt_tokens, tokens)}
