"""Generation settings and their checks: bad settings fail before any model runs, with a fix in the message."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from onnxformer.errors import InputError


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    repetition_penalty: float = 1.0  # 1.0: none (CTRL-style: divide positive logits, multiply negative ones)
    # OpenAI's penalties, over the generated tokens only: logits[t] -= presence * (count[t] > 0) + frequency * count[t]
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) added to the logits before anything else
    logprobs: int | None = None  # None: none; k: each generated token's log-probability and the k most likely
    stop: tuple[str, ...] = ()
    # vLLM's: end-of-sequence cannot end the text before min_tokens new tokens (its logits are masked, stop strings
    # unchecked); ignore_eos: it never does (generated, it is an ordinary token), the text runs to max_new_tokens.
    min_tokens: int = 0
    ignore_eos: bool = False
    seed: int | None = None
    truncate: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if self.do_sample and not self.temperature > 0:
            raise InputError(
                f"temperature must be > 0 when do_sample=True (got {self.temperature!r}); "
                "use do_sample=False for greedy decoding"
            )
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise InputError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1] (1 disables it), got {self.top_p!r}")
        if not self.repetition_penalty > 0:
            raise InputError(f"repetition_penalty must be > 0 (1 disables it), got {self.repetition_penalty!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"{name} must be a finite number (0 disables it), got {value!r}")
        for token, bias in self.logit_bias:
            if isinstance(token, bool) or not isinstance(token, int) or token < 0 or not math.isfinite(bias):
                raise InputError(f"logit_bias maps token ids (integers >= 0) to finite numbers, got {token!r}: {bias!r}")
        if self.logprobs is not None and (isinstance(self.logprobs, bool) or not isinstance(self.logprobs, int)
                                          or self.logprobs < 0):
            raise InputError(f"logprobs must be None or an integer >= 0 (how many top tokens), got {self.logprobs!r}")
        if isinstance(self.min_tokens, bool) or not isinstance(self.min_tokens, int) \
                or not 0 <= self.min_tokens <= self.max_new_tokens:
            raise InputError(f"min_tokens must be an integer from 0 to max_new_tokens={self.max_new_tokens}, "
                             f"got {self.min_tokens!r}")
        if not isinstance(self.ignore_eos, bool):
            raise InputError(f"ignore_eos must be true or false, got {self.ignore_eos!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InputError(f"stop sequences must be non-empty strings, got {list(self.stop)!r}")


DEFAULT_MAX_NEW_TOKENS = 32


def make_options(max_new_tokens: int | None = None, stop: str | Sequence[str] | None = None,
                 logit_bias: Mapping[int, float] | Sequence[tuple[int, float]] | None = None,
                 **kwargs: object) -> GenerationOptions:
    """Options from keyword arguments; ``stop`` may be one string or several, ``logit_bias`` a {token id: bias}.
    ``max_new_tokens`` None: 32, unless ``ignore_eos`` is set (then the caller must say how long the text runs)."""
    if max_new_tokens is None:
        if kwargs.get("ignore_eos"):
            raise InputError("ignore_eos=True needs an explicit max_new_tokens (max_tokens): the text runs until it")
        max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    items = logit_bias.items() if isinstance(logit_bias, Mapping) else (logit_bias or ())
    try:
        bias = tuple(sorted((token, float(value)) for token, value in items))
    except (TypeError, ValueError):
        raise InputError(f"logit_bias maps token ids to numbers, got {logit_bias!r}") from None
    return GenerationOptions(max_new_tokens=max_new_tokens, stop=stops, logit_bias=bias, **kwargs)  # type: ignore[arg-type]
