"""/v1/chat/completions in OpenAI's shape: messages rendered with the model's chat template, then generated
like a completion (the same admission, limits, timeout and continuous batch); whole, or streamed ``delta``s."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from onnxformer.serve.statuses import ErrorKind, ServingError
from onnxformer.serve.chat import check_messages
from onnxformer.serve.httpio import read_body
from onnxformer.serve.routes_generate import _events, event_stream, run_whole
from onnxformer.serve.schemas import ChatRequest, parse_body
from onnxformer.serve.state import server_state

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
    reply = _ChatReply(service.name, sum(job.prompt_tokens))
    slot = service.admit()
    if chat.stream:
        return event_stream(_events(job, reply.chunk, time.monotonic() + state.config.timeout_s, slot), slot)
    done = (await run_whole(job, state.config.timeout_s, slot))[0]
    choice = {"index": 0, "message": {"role": "assistant", "content": done.text},
              "finish_reason": done.finish_reason, "logprobs": None}
    return JSONResponse({**reply.head("chat.completion"), "choices": [choice], "usage": reply.usage(done.tokens)})


class _ChatReply:
    def __init__(self, model: str, prompt_tokens: int):
        self.model, self.prompt_tokens = model, prompt_tokens
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        self.started = False

    def head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def usage(self, tokens: int) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": tokens,
                "total_tokens": self.prompt_tokens + tokens}

    def chunk(self, piece: str, finish_reason: str | None, tokens: int | None) -> dict[str, Any]:
        """A streamed chunk: the first ``delta`` names the role; the last carries the finish reason and usage."""
        delta: dict[str, Any] = {"content": piece} if piece or finish_reason is None else {}
        if not self.started:
            delta["role"], self.started = "assistant", True
        out = {**self.head("chat.completion.chunk"),
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
        if tokens is not None:
            out["usage"] = self.usage(tokens)
        return out
