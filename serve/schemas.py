"""Request bodies of every route, validated once at the boundary (pydantic v2): types, lengths, numeric ranges
and nesting depth are checked here, so nothing unvalidated reaches the tokenizer, numpy or ONNX Runtime.

Limits that depend on the server's flags or the model (texts per request, tokens per text) are checked by the
services; the bounds here are the absolute ones no well-formed request comes near. OpenAI routes accept every field of
OpenAI's schema, neutral values included; they refuse fields OpenAI does not have, and values this server cannot
honour (tools, a JSON schema, audio, …), with a 400 naming the field.
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
DEFAULT_MAX_TOKENS = 16  # OpenAI's completions default, ours for chat too

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Texts = Union[Text, Annotated[list[Text], Field(max_length=MAX_ITEMS)]]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Body(BaseModel):
    """Strict types (no "1" for 1), unknown fields refused."""
    model_config = ConfigDict(extra="forbid", strict=True)


class _OpenAI(_Body):
    """OpenAI's request schema: every documented field is accepted. ``refused`` maps the fields this server cannot
    honour to their neutral values (null, or what leaves the request unchanged): any other value is a 400 naming the
    field; ``ignored`` fields (bookkeeping such as ``store`` or ``metadata``) are accepted and dropped."""
    user: Optional[Annotated[str, Field(max_length=256)]] = None  # OpenAI clients send it: accepted, ignored
    refused: ClassVar[dict[str, tuple[Any, ...]]] = {}
    ignored: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for name, neutral in cls.refused.items():
                value = data.pop(name, None)
                if value is not None and value not in neutral:
                    raise ServingError(f"{name}={json.dumps(value)[:80]} is not supported by this server "
                                       f"({_REFUSED_WHY.get(name, 'not implemented')}); remove it from the request",
                                       ErrorKind.BAD_REQUEST)
            for name in cls.ignored:
                data.pop(name, None)
        return data


_REFUSED_WHY = {
    "tools": "no tool calling", "functions": "no function calling", "tool_choice": "no tool calling",
    "function_call": "no function calling", "response_format": "no structured output: only {\"type\": \"text\"}",
    "audio": "text only", "modalities": "text only", "prediction": "no predicted outputs",
    "web_search_options": "no web search", "reasoning_effort": "not a reasoning model",
    "suffix": "no insertion: the completion follows the prompt",
}

MAX_TOKEN_IDS = 1 << 16  # one token-id input; the body size and the model's positions bound it far lower
TokenId = Annotated[int, Field(ge=-(1 << 63), le=(1 << 63) - 1)]  # the model's vocabulary is checked later
TokenIds = Annotated[list[TokenId], Field(max_length=MAX_TOKEN_IDS)]
# OpenAI's input and prompt: a text, texts, one tokenized input (ints) or several (lists of ints)
Inputs = Union[Text, Annotated[list[Text], Field(max_length=MAX_ITEMS)], TokenIds,
               Annotated[list[TokenIds], Field(max_length=MAX_ITEMS)]]


def as_list(inputs: Any) -> list[Any]:
    """OpenAI's input forms as a list of inputs (each a text or a list of token ids)."""
    if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
        return [inputs]
    return list(inputs)


# --- OpenAI-style routes -----------------------------------------------------------------------------
class EmbeddingsRequest(_OpenAI):
    input: Inputs
    model: Optional[Annotated[str, Field(max_length=256)]] = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[Annotated[int, Field(ge=1, le=1 << 20)]] = None
    prompt_name: Optional[Annotated[str, Field(max_length=256)]] = None  # sentence-transformers' prompts (TEI too)
    prompt: Optional[Annotated[str, Field(max_length=4096)]] = None


class StreamOptions(_Body):
    include_usage: Optional[bool] = None  # a last chunk with the usage (and "usage": null on the others)
    include_obfuscation: Optional[bool] = None  # OpenAI pads chunks against side channels: accepted, no effect


Penalty = Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)]
LogitBias = Annotated[dict[Annotated[str, Field(max_length=24)], Annotated[float, Field(ge=-100, le=100)]],
                      Field(max_length=1024)]


class _Sampling(_OpenAI):
    """The generation parameters completions and chat completions share."""
    temperature: Finite = Field(default=1.0, ge=0, le=100)  # OpenAI's meaning: 0 is greedy, > 0 samples
    top_p: Finite = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, le=1 << 31)  # not OpenAI's; vLLM's extension, 0 = off
    repetition_penalty: Finite = Field(default=1.0, gt=0, le=1e6)  # not OpenAI's; transformers' (vLLM's too)
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    logit_bias: Optional[LogitBias] = None  # {"token id": bias}
    stop: Union[Annotated[str, Field(min_length=1, max_length=256)],
                Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=8)], None] = None
    seed: Optional[Annotated[int, Field(ge=0, le=U64)]] = None
    min_tokens: int = Field(default=0, ge=0, le=1 << 20)  # not OpenAI's; vLLM's: no end-of-sequence before it
    ignore_eos: bool = False  # not OpenAI's; vLLM's: end-of-sequence never ends the text (needs max_tokens)
    n: int = Field(default=1, ge=1, le=128)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    model: Optional[Annotated[str, Field(max_length=256)]] = None

    @model_validator(mode="after")
    def _check_bias(self) -> _Sampling:
        _token_bias(self.logit_bias)  # keys are token ids: refused here, at the boundary
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling(self) -> dict[str, Any]:
        sample = self.temperature > 0
        return {"do_sample": sample, "temperature": self.temperature if sample else 1.0, "top_p": self.top_p,
                "top_k": self.top_k, "repetition_penalty": self.repetition_penalty, "stop": self.stop,
                "seed": self.seed, "presence_penalty": self.presence_penalty,
                "frequency_penalty": self.frequency_penalty, "logit_bias": _token_bias(self.logit_bias),
                "min_tokens": self.min_tokens, "ignore_eos": self.ignore_eos}

    def _check_length(self, max_tokens: Optional[int], name: str) -> None:
        """vLLM's rules: ignore_eos runs to max_tokens, so the request must carry it; min_tokens ≤ max_tokens."""
        if self.ignore_eos and max_tokens is None:
            raise ServingError(f"ignore_eos=true needs {name}: the text runs until it; send {name}",
                               ErrorKind.BAD_REQUEST)
        if self.min_tokens > (max_tokens or DEFAULT_MAX_TOKENS):
            raise ServingError(f"min_tokens={self.min_tokens} is over {name}={max_tokens or DEFAULT_MAX_TOKENS}; "
                               f"lower min_tokens or raise {name}", ErrorKind.BAD_REQUEST)


def _token_bias(bias: Optional[dict[str, float]]) -> dict[int, float]:
    out = {}
    for key, value in (bias or {}).items():
        if not key.isdigit():
            raise ServingError(f"logit_bias key {key!r} is not a token id (an integer >= 0, as a string)",
                               ErrorKind.BAD_REQUEST)
        out[int(key)] = value
    return out


class CompletionRequest(_Sampling):
    refused = {"suffix": ("",)}
    prompt: Inputs
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1, le=1 << 20)
    echo: bool = False  # the prompt's text before the completion's
    logprobs: Optional[Annotated[int, Field(ge=0, le=20)]] = None  # the chosen token's and this many top tokens'
    best_of: Optional[Annotated[int, Field(ge=1, le=128)]] = None  # only = n: no server-side ranking

    @model_validator(mode="after")
    def _check(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != self.n:
            raise ServingError(f"best_of={self.best_of} with n={self.n}: this server does not rank extra completions "
                               "server-side; send best_of=n (or none) and ask for logprobs to rank them yourself",
                               ErrorKind.BAD_REQUEST)
        if self.echo and self.logprobs is not None:
            raise ServingError("echo with logprobs would need the prompt's log-probabilities, which this server does "
                               "not compute; send one of them", ErrorKind.BAD_REQUEST)
        self._check_length(self.max_tokens if "max_tokens" in self.model_fields_set else None, "max_tokens")
        return self

    def options(self) -> dict[str, Any]:
        return {**self.sampling(), "logprobs": self.logprobs}


class Message(BaseModel):
    """One chat message; clients send more (name, tool_calls, …): tolerated, not used."""
    model_config = ConfigDict(strict=True)
    role: Annotated[str, Field(max_length=64)]
    content: Union[Text, Annotated[list[dict[str, Any]], Field(max_length=MAX_ITEMS)], None] = None


class ChatRequest(_Sampling):
    refused = {"tools": ([],), "functions": ([],), "tool_choice": ("none", "auto"), "function_call": ("none", "auto"),
               "response_format": ({"type": "text"},), "audio": (), "modalities": (["text"],), "prediction": (),
               "web_search_options": (), "reasoning_effort": ()}
    ignored = ("store", "metadata", "service_tier", "parallel_tool_calls", "prompt_cache_key", "safety_identifier",
               "verbosity")
    messages: Annotated[list[Message], Field(max_length=MAX_ITEMS)]  # empty: check_messages says so
    max_tokens: Optional[Annotated[int, Field(ge=1, le=1 << 20)]] = None
    max_completion_tokens: Optional[Annotated[int, Field(ge=1, le=1 << 20)]] = None  # OpenAI's newer name
    logprobs: Optional[bool] = None
    top_logprobs: Optional[Annotated[int, Field(ge=0, le=20)]] = None

    @model_validator(mode="after")
    def _check(self) -> ChatRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ServingError("top_logprobs needs logprobs=true", ErrorKind.BAD_REQUEST)
        self._check_length(self.max_completion_tokens or self.max_tokens,
                           "max_completion_tokens" if self.max_completion_tokens else "max_tokens")
        return self

    def completion(self, prompt: str) -> CompletionRequest:
        fields = self.model_dump(exclude={"messages", "max_tokens", "max_completion_tokens", "logprobs",
                                          "top_logprobs", "stream_options"})
        max_tokens = self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS
        return CompletionRequest(prompt=prompt, max_tokens=max_tokens,
                                 logprobs=(self.top_logprobs or 0) if self.logprobs else None,
                                 stream_options=self.stream_options, **fields)


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
