"""Request bodies of every route, validated once at the boundary (pydantic v2): types, lengths, numeric ranges
and nesting depth are checked here, so nothing unvalidated reaches the tokenizer, numpy or ONNX Runtime.

Limits that depend on the server's flags or the model (texts per request, tokens per text) are checked by the
services; the bounds here are the absolute ones no well-formed request comes near. OpenAI routes refuse
fields they do not know, and OpenAI parameters this server does not implement, with a 400 naming the field.
"""
from __future__ import annotations

import json
import re
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import numpy as np

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from onnxformer.serve.statuses import ErrorKind, ServingError

MAX_DEPTH = 32  # JSON nesting: the deepest legal body (KServe [N, T] data) needs 4
MAX_ITEMS = 4096  # list items anywhere in a body (the per-request text limit, --max-texts, is far lower)
MAX_TEXT_CHARS = 1 << 20  # one text; the token limit (checked from the character count first) is lower
U64 = (1 << 64) - 1

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Texts = Union[Text, Annotated[list[Text], Field(max_length=MAX_ITEMS)]]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Body(BaseModel):
    """Strict types (no "1" for 1), unknown fields refused."""
    model_config = ConfigDict(extra="forbid", strict=True)


class _OpenAI(_Body):
    user: Optional[Annotated[str, Field(max_length=256)]] = None  # OpenAI clients send it: accepted, ignored
    unsupported: ClassVar[tuple[str, ...]] = ()  # OpenAI parameters we do not implement: non-null → 400

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in cls.unsupported:
                if data.get(name) is not None:
                    raise ServingError(f"{name} is not supported by this server; remove it from the request",
                                       ErrorKind.BAD_REQUEST)
                data.pop(name, None)
        return data


# --- OpenAI-style routes -----------------------------------------------------------------------------
class EmbeddingsRequest(_OpenAI):
    input: Texts
    model: Optional[Annotated[str, Field(max_length=256)]] = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[Annotated[int, Field(ge=1, le=1 << 20)]] = None
    prompt_name: Optional[Annotated[str, Field(max_length=256)]] = None  # sentence-transformers' prompts (TEI too)
    prompt: Optional[Annotated[str, Field(max_length=4096)]] = None


class _Sampling(_OpenAI):
    """The generation parameters completions and chat completions share."""
    temperature: Finite = Field(default=1.0, ge=0, le=100)  # OpenAI's meaning: 0 is greedy, > 0 samples
    top_p: Finite = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, le=1 << 31)  # not OpenAI's; vLLM's extension, 0 = off
    repetition_penalty: Finite = Field(default=1.0, gt=0, le=1e6)
    stop: Union[Annotated[str, Field(min_length=1, max_length=256)],
                Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=8)], None] = None
    seed: Optional[Annotated[int, Field(ge=0, le=U64)]] = None
    n: int = Field(default=1, ge=1, le=128)
    stream: bool = False
    model: Optional[Annotated[str, Field(max_length=256)]] = None


class CompletionRequest(_Sampling):
    unsupported = ("logprobs", "echo", "best_of", "presence_penalty", "frequency_penalty", "suffix", "logit_bias")
    prompt: Texts
    max_tokens: int = Field(default=16, ge=1, le=1 << 20)

    def options(self) -> dict[str, Any]:
        sample = self.temperature > 0
        return {"do_sample": sample, "temperature": self.temperature if sample else 1.0, "top_p": self.top_p,
                "top_k": self.top_k, "repetition_penalty": self.repetition_penalty, "stop": self.stop,
                "seed": self.seed}


class Message(BaseModel):
    """One chat message; clients send more (name, tool_calls, …): tolerated, not used."""
    model_config = ConfigDict(strict=True)
    role: Annotated[str, Field(max_length=64)]
    content: Union[Text, Annotated[list[dict[str, Any]], Field(max_length=MAX_ITEMS)], None] = None


class ChatRequest(_Sampling):
    unsupported = ("logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias", "tools",
                   "tool_choice", "response_format")
    messages: Annotated[list[Message], Field(max_length=MAX_ITEMS)]  # empty: check_messages says so
    max_tokens: Optional[Annotated[int, Field(ge=1, le=1 << 20)]] = None
    max_completion_tokens: Optional[Annotated[int, Field(ge=1, le=1 << 20)]] = None  # OpenAI's newer name

    def completion(self, prompt: str) -> CompletionRequest:
        fields = self.model_dump(exclude={"messages", "max_tokens", "max_completion_tokens"})
        return CompletionRequest(prompt=prompt, max_tokens=self.max_completion_tokens or self.max_tokens or 16,
                                 **fields)


# --- task routes ----------------------------------------------------------------------------------------
class ClassifyRequest(_Body):
    inputs: Texts
    model: Optional[Annotated[str, Field(max_length=256)]] = None  # which model, on a server of several
    top_k: Optional[Annotated[int, Field(ge=1, le=1 << 20)]] = None


class TagRequest(_Body):
    inputs: Texts
    model: Optional[Annotated[str, Field(max_length=256)]] = None  # which model, on a server of several
    aggregation: Optional[Literal["none", "simple", "first", "average", "max"]] = None


class QAPair(_Body):
    question: Text
    context: Text


class AnswerRequest(_Body):
    model: Optional[Annotated[str, Field(max_length=256)]] = None  # which model, on a server of several
    inputs: Annotated[list[QAPair], Field(max_length=MAX_ITEMS)]


class RerankRequest(_Body):  # /v1/rerank (Cohere, Jina, vLLM)
    query: Text
    documents: Annotated[list[Text], Field(min_length=1, max_length=MAX_ITEMS)]
    model: Optional[Annotated[str, Field(max_length=256)]] = None
    top_n: Optional[Annotated[int, Field(ge=1, le=1 << 20)]] = None
    return_documents: bool = False


class TEIRerankRequest(_Body):  # text-embeddings-inference's /rerank
    query: Text
    texts: Annotated[list[Text], Field(min_length=1, max_length=MAX_ITEMS)]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = False


# --- KServe v2 infer (the JSON header; tensor data is checked against datatype and shape in serve/kserve.py) ---
Scalar = Union[bool, int, Finite, Annotated[str, Field(max_length=4096)]]
Parameters = Annotated[dict[Annotated[str, Field(max_length=256)], Scalar], Field(max_length=64)]


class TensorInput(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # v2 clients may add fields of their own
    name: Annotated[str, Field(min_length=1, max_length=256)]
    datatype: Annotated[str, Field(max_length=16)]
    shape: Annotated[list[Annotated[int, Field(le=1 << 31)]], Field(max_length=8)]  # sign: kserve.py says
    parameters: Optional[Parameters] = None
    data: Any = None


class TensorOutput(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    name: Annotated[str, Field(min_length=1, max_length=256)]
    parameters: Optional[Parameters] = None


class InferBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    id: Optional[Annotated[str, Field(max_length=256)]] = None
    inputs: Annotated[list[TensorInput], Field(max_length=64)]  # empty: kserve.py says what to send
    outputs: Optional[Annotated[list[TensorOutput], Field(max_length=64)]] = None
    parameters: Optional[Parameters] = None


# --- parsing ---------------------------------------------------------------------------------------------
def parse_body(body: bytes, schema: type[BaseModel]) -> Any:
    """Validate a JSON body; any problem is a 400 naming the field (``inputs.0.shape.1: ...``)."""
    check_depth(body)
    try:
        return schema.model_validate_json(body)
    except ServingError:
        raise
    except ValidationError as e:
        err = e.errors()[0]
        if err.get("type") == "json_invalid":
            raise ServingError(f"request body is not valid JSON ({_short(err['msg'])})", ErrorKind.BAD_REQUEST) from None
        where = ".".join(str(p) for p in err.get("loc", ()) if not _is_type_tag(p)) or "body"
        raise ServingError(f"invalid request ({where}: {_short(err['msg'])})", ErrorKind.BAD_REQUEST) from None
    except (ValueError, RecursionError) as e:  # pydantic wraps validator errors; anything else is malformed
        raise ServingError(f"invalid request ({_short(str(e))})", ErrorKind.BAD_REQUEST) from None


def check_depth(body: bytes, limit: int = MAX_DEPTH) -> None:
    """Refuse bodies nested deeper than ``limit`` before any JSON parser recurses into them (brackets inside
    strings do not count; an unbalanced body is left to the parser to refuse). Vectorised: 4 MB in ~10 ms."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return
    code = np.frombuffer(_STRING.sub(b'""', body), dtype=np.uint8)
    step = np.isin(code, _OPEN).astype(np.int32) - np.isin(code, _CLOSE).astype(np.int32)
    if step.size and int(np.cumsum(step).max()) > limit:
        raise ServingError(f"invalid request (JSON nested deeper than {limit} levels)", ErrorKind.BAD_REQUEST)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN, _CLOSE = np.frombuffer(b"[{", dtype=np.uint8), np.frombuffer(b"]}", dtype=np.uint8)


def loads(body: bytes) -> Any:
    """Plain JSON for bodies with no fixed schema (KServe tensor data), depth-bounded."""
    check_depth(body)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ServingError(f"request body is not valid JSON ({_short(str(e))})", ErrorKind.BAD_REQUEST) from None


def _is_type_tag(part: Any) -> bool:
    """pydantic names union members in error locations (``constrained-str``, ``list[...]``): not fields."""
    return isinstance(part, str) and ("-" in part or "[" in part or part in ("str", "int", "float", "bool"))


def _short(message: str) -> str:
    return message.splitlines()[0][:200] if message else "malformed"
