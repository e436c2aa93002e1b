"""`Generator`: load a generative artifact and produce text — batched, streamed, greedy or sampled."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import onnxruntime as ort

from onnxformer.artifact.files import confined
from onnxformer.artifact.manifest import REFERENCE, Generation, Manifest
from onnxformer.artifact.roles import DECODER, SLOTS
from onnxformer.errors import ArtifactError, InputError, InputKind
from onnxformer.runtime.generation.decoder import DecoderStepper
from onnxformer.runtime.generation.loop import SpecialTokens, Stepper, token_loop
from onnxformer.runtime.generation.options import GenerationOptions, make_options
from onnxformer.runtime.generation.sampling import TokenScore
from onnxformer.runtime.generation.seq2seq import Seq2SeqStepper
from onnxformer.runtime.generation.text import PromptEncoder, Prompts, TextStream
from onnxformer.runtime.loader import LoadOptions, open_artifact


class Generator:
    """Text generation from an artifact exported by ``export/generative.py``. Thread-safe: every call
    builds its own cache and state; the ONNX Runtime sessions are shared read-only."""

    def __init__(self, directory: Path, manifest: Manifest, variant: str,
                 sessions: dict[str, ort.InferenceSession], provider: str = "cpu", reason: str = ""):
        spec = generation_spec(directory, manifest)
        record = manifest.variant(variant)
        self.directory, self.manifest, self.variant, self.sessions = directory, manifest, variant, sessions
        self.provider, self.reason = provider, reason
        self.passed_over: dict[str, str] = {}  # variants that failed to open and were passed over (Opened's)
        self.kind: str = spec.kind
        # The variant's cache dtype (fp16 variants keep an fp16 cache) over the fp32 graph's.
        self.cache_layout = {**spec.cache, "dtype": record.cache_dtype or spec.cache.get("dtype", "float32")}
        # False for dynamic int8: in a continuous batch a row's tokens then depend on its batch-mates.
        self.batch_invariant = record.batch_invariant
        self.max_positions = spec.max_positions
        self.vocab_size: int | None = manifest.architecture.vocab_size  # the ids the model takes (token-id prompts)
        tokens = spec.special_tokens
        self.start_id = tokens.get("decoder_start_token_id")
        if self.kind == "seq2seq" and self.start_id is None:
            raise ArtifactError(f"{directory}: a seq2seq manifest needs special_tokens.decoder_start_token_id; "
                                "set decoder_start_token_id in the checkpoint's config and re-export")
        # transformers forces bos only when the output so far is one token long: the seq2seq start token.
        forced_bos = tokens.get("forced_bos_token_id") if self.kind == "seq2seq" else None
        self.special = SpecialTokens(tuple(tokens["eos_token_ids"]), int(tokens["pad_token_id"]), forced_bos,
                                     tokens.get("forced_eos_token_id"))
        side = "left" if self.kind == "decoder" else "right"
        self.prompts = PromptEncoder(confined(directory, "tokenizer.json"), self.special.pad, side)

    @classmethod
    def load(cls, directory: str | Path, provider: str | Sequence[str] = "auto", variant: str = "fp32",
             threads: int | None = None, strict: bool = False, batching: bool = False) -> Generator:
        """Verify and load ``variant`` (every graph sha256-checked, external data confined) on ``provider``
        ("auto": the best available that the variant targets, each fallback logged; ``strict``: a fallback is
        an error). Same arguments, in the same order, as ``Model.load``. ``batching``: the caller runs a decoder
        through a continuous batch (the server), so its solo graph starts only if something asks for it."""
        directory = Path(directory)
        if variant == "auto":
            variant = REFERENCE  # generative variants trade fidelity for speed only when asked for by name
        # The slot graph (continuous batching) starts only when a batch scheduler asks for it: a solo generation
        # never holds a second copy of the weights; nor does a batch on the slot graph hold the solo graph's.
        deferred = (SLOTS, DECODER) if batching and _has_slots(directory) else (SLOTS,)
        opened = open_artifact(directory, LoadOptions(provider, variant, None, threads, strict, io_binding=False,
                                                      deferred=deferred), generative=True)
        if not opened.record.components:
            raise ArtifactError(f"variant {variant!r} of {directory} lists no generation components; re-export it")
        sessions = Sessions({role: runner.session for role, runner in opened.runners.items()}, opened.deferred)
        generator = cls(directory, opened.manifest, opened.variant, sessions, opened.provider, opened.reason)
        generator.passed_over = dict(opened.passed_over)
        return generator

    def generate(self, prompts: str | Sequence[str], max_new_tokens: int | None = None,
                 **options: Any) -> str | list[str]:
        """Generated text per prompt (a str for a str). Options: do_sample, temperature, top_k, top_p,
        repetition_penalty, presence_penalty and frequency_penalty (OpenAI's), logit_bias ({token id: bias}),
        stop (str or list: the text ends before it), min_tokens and ignore_eos (vLLM's; ignore_eos needs an explicit
        max_new_tokens, which is 32 otherwise), seed, truncate, logprobs (``start(...).completions()`` carry
        the scores)."""
        run = self.start(prompts, max_new_tokens, **options)
        run.finish()
        texts = [c.text for c in run.completions()]
        return texts[0] if isinstance(prompts, str) else texts

    def stream(self, prompt: str, max_new_tokens: int | None = None, **options: Any) -> Iterator[str]:
        """Yield text pieces of one prompt as they are produced; joined they equal ``generate(prompt)``.
        Bad input raises here, at the call, not at the first iteration."""
        if not isinstance(prompt, str):
            raise InputError("stream() takes one prompt string; use generate() for a batch")
        return self.start(prompt, max_new_tokens, **options).pieces()

    def generate_ids(self, prompts: Sequence[str], max_new_tokens: int | None = None,
                     **options: Any) -> list[list[int]]:
        """Generated token ids per prompt, up to and including the end-of-sequence token."""
        run = self.start(prompts, max_new_tokens, **options)
        run.finish()
        return [s.ids for s in run.streams]

    def start(self, prompts: str | Sequence[str], max_new_tokens: int | None = None, **options: Any) -> Run:
        """A generation not yet run: prompts tokenized and options checked (bad input raises here). A prompt is a
        string, or a list of the model's token ids (used as given)."""
        opts = make_options(max_new_tokens, **options)
        batch = [prompts] if isinstance(prompts, str) else list(prompts)
        stepper, history, lengths = self._stepper(batch, opts)  # tokenizes and checks the prompts
        streams = [TextStream(self.prompts.tokenizer, opts.stop, opts.min_tokens) for _ in batch]
        return Run(stepper, history, opts, self.special, streams, lengths)

    def encode_prompts(self, batch: list[str], opts: GenerationOptions) -> Prompts:
        """A decoder's prompts, tokenized and checked against the positions left by ``max_new_tokens``."""
        room = self.max_positions - opts.max_new_tokens
        if room < 1:
            raise InputError(f"max_new_tokens={opts.max_new_tokens} leaves no room for a prompt in this "
                             f"model's {self.max_positions} positions; lower max_new_tokens", InputKind.TOO_LONG)
        return self.prompts.encode(batch, room, opts.truncate,
                                   f"tokens that fit with max_new_tokens={opts.max_new_tokens} "
                                   f"in this model's {self.max_positions} positions", self.vocab_size)

    def encode_inputs(self, batch: list[str], opts: GenerationOptions) -> Prompts:
        """The texts as the model reads them, checked: a decoder's prompts (left-padded, room left for
        ``max_new_tokens`` in the positions), a seq2seq model's sources (right-padded, the encoder's limit)."""
        if self.kind == "decoder":
            return self.encode_prompts(batch, opts)
        if opts.max_new_tokens + 1 > self.max_positions:
            raise InputError(f"max_new_tokens={opts.max_new_tokens} exceeds this model's {self.max_positions} "
                             "decoder positions; lower it", InputKind.TOO_LONG)
        return self.prompts.encode(batch, self.max_positions, opts.truncate, "token limit of this model's encoder",
                                   self.vocab_size)

    def _stepper(self, batch: list[str], opts: GenerationOptions) -> tuple[Stepper, np.ndarray, list[int]]:
        inputs = self.encode_inputs(batch, opts)
        if self.kind == "decoder":
            history = np.where(inputs.mask == 1, inputs.ids, -1)
            spec = self.manifest.generation
            assert spec is not None  # a generative artifact (checked at load)
            stepper: Stepper = DecoderStepper(self.sessions[DECODER], self.cache_layout, inputs, opts.max_new_tokens,
                                              spec.position_ids, spec.logits_to_keep)
            return stepper, history, inputs.lengths
        assert self.start_id is not None  # a seq2seq artifact records its decoder's start token
        history = np.full((len(batch), 1), self.start_id, dtype=np.int64)
        stepper = Seq2SeqStepper(self.sessions, self.cache_layout, inputs, opts.max_new_tokens, self.start_id)
        return stepper, history, inputs.lengths


@dataclass(frozen=True)
class Completion:
    text: str  # generated text, cut before a stop sequence
    tokens: int  # generated tokens, end-of-sequence included
    finish_reason: str  # "stop": end-of-sequence or a stop sequence; "length": max_new_tokens reached
    scores: list[TokenScore] = field(default_factory=list)  # per generated token, when logprobs were asked for


class Run:
    """One generation in progress. ``step()`` makes one token per unfinished row, so a caller (the server)
    can interleave several runs on one worker thread and stop one at any step; ``take(row)`` hands out the
    text that became final since the last take."""

    def __init__(self, stepper: Stepper, history: np.ndarray, opts: GenerationOptions, special: SpecialTokens,
                 streams: list[TextStream], prompt_tokens: list[int]):
        self.stepper, self.history, self.opts, self.special, self.streams = stepper, history, opts, special, streams
        self.prompt_tokens = prompt_tokens  # per prompt, as the model sees it (after truncation)
        self._steps = self._loop()
        self.done = False

    def step(self) -> bool:
        """Advance by one token; False (and nothing run) once every row has finished."""
        if not self.done:
            self.done = next(self._steps, None) is None
        return not self.done

    def take(self, row: int = 0) -> str:
        stream = self.streams[row]
        chunk, stream.pending = stream.pending, ""
        return chunk

    def finish(self) -> None:
        while self.step():
            pass

    def pieces(self) -> Iterator[str]:
        while self.step():
            if chunk := self.take():
                yield chunk
        if chunk := self.take():
            yield chunk

    def completions(self) -> list[Completion]:
        eos = set(self.special.eos)
        if self.opts.ignore_eos:
            eos = set()  # an end-of-sequence token is an ordinary one: only a stop string stops
        return [Completion(s.text, len(s.ids), "stop" if s.stopped or (s.ids and s.ids[-1] in eos) else "length",
                           list(s.scores)) for s in self.streams]

    def _loop(self) -> Iterator[bool]:
        finished = np.zeros(len(self.streams), dtype=bool)
        for tokens, active, step_scores in token_loop(self.stepper, self.history, self.opts, self.special, finished):
            for row in np.flatnonzero(active):
                stream = self.streams[row]
                if step_scores is not None:
                    stream.scores.append(step_scores[row])
                stream.pending += stream.add(int(tokens[row]))
                if stream.stopped:
                    finished[row] = True  # the loop sees it before the next step
            yield True
        for stream in self.streams:
            stream.pending += stream.flush()


def _has_slots(directory: Path) -> bool:
    generation = Manifest.load(directory).generation
    return generation is not None and generation.kind == "decoder" and "role" in (generation.extra.get("slots") or {})


class Sessions(dict):
    """role → ONNX Runtime session; a deferred role's session starts on first access (thread-safe)."""

    def __init__(self, started: dict[str, ort.InferenceSession], deferred: dict[str, Any]):
        super().__init__(started)
        self._deferred, self._lock = dict(deferred), threading.Lock()

    def __contains__(self, role: object) -> bool:
        return super().__contains__(role) or role in self._deferred

    def __missing__(self, role: str) -> ort.InferenceSession:
        with self._lock:
            if not super().__contains__(role):
                start = self._deferred.get(role)
                if start is None:
                    raise KeyError(role)
                self[role] = start().session
                del self._deferred[role]
        return dict.__getitem__(self, role)


def generation_spec(directory: Path, manifest: Manifest) -> Generation:
    if manifest.generation is None:
        raise ArtifactError(f"{directory} is a {manifest.task} artifact, not a generative one; "
                            "export a text-generation or text2text-generation checkpoint")
    return manifest.generation
