"""Token log-probabilities in OpenAI's two shapes: completions' parallel lists and chat's per-token objects.

A token is shown as its own decoded text (a piece of a multi-byte character decodes to U+FFFD; chat's ``bytes``
then holds the UTF-8 of that text, not the raw byte). The values are the model's own distribution at each step
(the raw logits, before penalties, bias, temperature or filters: vLLM's default).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from onnxformer.runtime.generation.sampling import TokenScore

Decode = Callable[[int], str]


def completion_logprobs(scores: Sequence[TokenScore], decode: Decode, offset: int = 0) -> dict[str, Any]:
    """/v1/completions' ``logprobs``: tokens, their log-probabilities, the top ones (with the chosen token, as
    OpenAI: up to ``logprobs + 1`` entries) and each token's character offset in the text (from ``offset``)."""
    tokens = [decode(s.token) for s in scores]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    top = [{**{decode(i): p for i, p in s.top}, decode(s.token): s.logprob} for s in scores]
    return {"tokens": tokens, "token_logprobs": [s.logprob for s in scores], "top_logprobs": top,
            "text_offset": offsets}


def chat_logprobs(scores: Sequence[TokenScore], decode: Decode) -> dict[str, Any]:
    """/v1/chat/completions' ``logprobs``: one object per token, its ``top_logprobs`` the ``top_logprobs`` asked."""
    def entry(token: int, logprob: float) -> dict[str, Any]:
        text = decode(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {"content": [{**entry(s.token, s.logprob), "top_logprobs": [entry(i, p) for i, p in s.top]}
                        for s in scores], "refusal": None}


def token_decoder(tokenizer: Any) -> Decode:
    return lambda token: tokenizer.decode([token], skip_special_tokens=False)
