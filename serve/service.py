"""The model behind the endpoints: request limits, task guards, and one batching lane per operation."""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Sequence

import numpy as np
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException
from tokenizers import Encoding

from onnxformer.artifact.tasks import get_task
from onnxformer.errors import InputError
from onnxformer.runtime import Model
from onnxformer.runtime.tokenizer import IdsEncoding, check_texts, check_token_ids
from onnxformer.serve.batcher import Lanes
from onnxformer.serve.config import ServeConfig
from onnxformer.serve.statuses import ErrorKind, ServingError
from onnxformer.serve.task_routes import routes_for, serving


class ModelService:
    """Validates inputs *before* they join a batch, so one bad request never fails its neighbours."""

    def __init__(self, model: Model, config: ServeConfig, scheduler: Lanes):
        self.model = model
        self.config = config
        self.scheduler = scheduler
        self.name: str = model.manifest.name or model.directory.name
        self.task = model.task
        self.spec = get_task(model.task)  # the registry's entry: method, tokenizer
        self.routes = routes_for(self.spec.name)  # what serves it: endpoints, the KServe text input
        limit = model.manifest.max_length  # None: no tokenizer (raw), only --max-tokens-per-text applies
        tokenizer = model.tokenizer
        self.vocab_size: int | None = tokenizer.vocab_size if tokenizer is not None else None
        self.max_tokens: int | None = (min(config.max_tokens_per_text or limit, limit) if limit is not None
                                       else config.max_tokens_per_text)

    # --- operations --------------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """(N, C) float32 embeddings and the number of tokens they cost."""
        self.require("/v1/embeddings")
        encodings = await self.admit_texts(texts)
        lane = self.scheduler.lane("embed", lambda chunk: list(self.model.embed_encodings(chunk)))
        vectors = await lane.submit(encodings)  # tokenized once, at admission
        return np.stack(vectors).astype(np.float32), sum(len(e.ids) for e in encodings)

    async def embed_ids(self, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, int]:
        """``embed`` of inputs already tokenized: the model's own token ids, used as given (as other OpenAI-compatible
        servers take them), checked against its vocabulary and the token limit."""
        self.require("/v1/embeddings")
        self.check_count(len(rows))
        vocab = self.model.manifest.architecture.vocab_size or self.vocab_size
        try:
            encodings = [IdsEncoding(ids) for ids in check_token_ids(rows, vocab)] if vocab else None
        except InputError as e:
            raise ServingError(str(e), ErrorKind.BAD_REQUEST) from None
        if encodings is None:
            raise ServingError(f"{self.name!r} has no tokenizer or vocabulary size; send text", ErrorKind.BAD_REQUEST)
        self._check_lengths([len(e.ids) for e in encodings])
        lane = self.scheduler.lane("embed", lambda chunk: list(self.model.embed_encodings(chunk)))
        vectors = await lane.submit(encodings)  # the same lane as texts: ids and texts batch together
        return np.stack(vectors).astype(np.float32), sum(len(e.ids) for e in encodings)

    async def logits(self, texts: Sequence[str]) -> np.ndarray:
        """(N, L) classification logits, for the KServe text input of a text-classification model."""
        encodings = await self.admit_texts(texts)
        lane = self.scheduler.lane("logits", self._run_logits)
        return np.stack(await lane.submit(encodings)).astype(np.float32)

    async def classify(self, texts: Sequence[str], top_k: int | None) -> list[Any]:
        return await self._per_text("/v1/classify", self.model.classify, texts, top_k=top_k)

    async def tag(self, texts: Sequence[str], aggregation: str | None) -> list[Any]:
        return await self._per_text("/v1/tag", self.model.tag, texts, aggregation=aggregation)

    async def _per_text(self, endpoint: str, method: Any, texts: Sequence[str], **options: Any) -> list[Any]:
        """A Model method over admitted texts; requests with the same options share one batching lane."""
        self.require(endpoint)
        await self.admit_texts(texts)
        kwargs = {k: v for k, v in options.items() if v is not None}  # None: the method's own default
        kwargs["truncate"] = self.config.truncate  # --truncate: the run cuts what admission let through cut
        lane = self.scheduler.lane(f"{endpoint}:{sorted(kwargs.items())}", lambda chunk: method(chunk, **kwargs))
        return jsonable(await lane.submit(list(texts)))

    async def relevance(self, query: str, documents: Sequence[str], truncate: bool = False,
                        raw: bool = False) -> tuple[list[float], int]:
        """Cross-encoder scores of ``query`` with each document (``raw``: the logit, TEI's raw_scores) and the
        tokens they cost. Pairs of every request share one lane, so concurrent reranks batch together."""
        self.require("/v1/rerank")
        truncate = truncate or self.config.truncate
        await self.admit_texts([query])
        await self.admit_texts(list(documents))
        tokenizer = self.model.text_tokenizer
        try:  # the pair must fit the model, not each text alone
            encodings = await asyncio.to_thread(tokenizer.encodings, [query] * len(documents), truncate, documents)
        except InputError as e:
            raise ServingError(f"a (query, document) pair is too long: {e}; pass truncate", ErrorKind.UNPROCESSABLE) from None
        self._check_lengths([len(e.ids) for e in encodings])
        lane = self.scheduler.lane(f"relevance:{truncate}:{raw}",
                                   lambda chunk: list(self.model.relevance(chunk, truncate=truncate, raw=raw)))
        scores = await lane.submit([(query, d) for d in documents])
        return [float(x) for x in scores], sum(len(e.ids) for e in encodings)

    async def answer(self, pairs: Sequence[tuple[str, str]]) -> list[Any]:
        """QA: long contexts are split by the runtime, so only the question is held to the token limit."""
        self.require("/v1/answer")
        self.check_count(len(pairs))
        await self.admit_texts([q for q, _ in pairs])
        check_texts([c for _, c in pairs])
        lane = self.scheduler.lane("answer", lambda chunk: [self.model.answer(q, c) for q, c in chunk])
        return jsonable(await lane.submit(list(pairs)))

    async def run_raw(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw tensors: shapes differ per request, so these are never merged (no padding semantics to guess)."""
        lane = self.scheduler.lane("raw", lambda chunk: [self._run(f) for f in chunk], mergeable=False)
        return (await lane.submit([feeds]))[0]

    # --- guards ------------------------------------------------------------------------------------
    def require(self, endpoint: str) -> None:
        """``endpoint`` must be one the registry lists for this model's task."""
        if endpoint not in self.routes.endpoints:
            serves = " or ".join(serving(endpoint))
            raise ServingError(f"{endpoint} needs a {serves} model; {self.name!r} is {self.task}",
                               ErrorKind.BAD_REQUEST)

    def check_count(self, n: int, what: str = "texts") -> None:
        if n > self.config.max_texts:
            raise ServingError(f"{n} {what} in one request; the limit is {self.config.max_texts} (split it)",
                               ErrorKind.PAYLOAD_TOO_LARGE)

    async def admit_texts(self, texts: Sequence[str]) -> list[Encoding]:
        """Check count, types and token length; returns the texts' encodings (the model runs these)."""
        if isinstance(texts, (list, tuple)):
            self.check_count(len(texts))
        try:
            check_texts(texts)
        except InputError as e:
            raise ServingError(str(e), ErrorKind.BAD_REQUEST) from None
        texts = self._cut(texts) if self.config.truncate else texts
        self._check_chars(texts)
        # tokenizing a few dozen long texts takes milliseconds: keep it off the event loop too
        return await asyncio.to_thread(self._tokenize, list(texts))

    def _cut(self, texts: Sequence[str]) -> list[str]:
        """--truncate: a text past the character bound is cut to it first (tokenizing stays bounded work); the
        tokenizer then keeps the first tokens up to the limit."""
        if self.max_tokens is None:
            return list(texts)
        limit = self.max_tokens * self.config.max_chars_per_token
        return [t[:limit] for t in texts]

    def _tokenize(self, texts: list[str]) -> list[Encoding]:
        tokenizer = self.model.text_tokenizer
        try:
            encodings = tokenizer.encodings(texts, truncate=self.config.truncate)
        except InputError:  # a text over the model's own limit (the texts passed check_texts): 422 below
            self._check_lengths(tokenizer.count_tokens(texts))
            raise
        self._check_lengths([len(e.ids) for e in encodings])
        return encodings

    def _check_chars(self, texts: Sequence[str]) -> None:
        """A text far longer in characters than the token limit allows is refused before it is tokenized (a
        3.8 MB body of long texts would otherwise hold the tokenizer for seconds)."""
        if self.max_tokens is None:
            return
        limit = self.max_tokens * self.config.max_chars_per_token
        for i, text in enumerate(texts):
            if len(text) > limit:
                raise ServingError(f"text {i} has {len(text)} characters; the limit is {limit} "
                                   f"({self.max_tokens} tokens, {ServeConfig.flag('max_chars_per_token')})",
                                   ErrorKind.UNPROCESSABLE)

    def _check_lengths(self, lengths: list[int]) -> None:
        for i, n in enumerate(lengths):
            if self.max_tokens is not None and n > self.max_tokens:
                raise ServingError(f"text {i} has {n} tokens; the limit is {self.max_tokens} (shorten it)",
                                   ErrorKind.UNPROCESSABLE) from None

    def _run_logits(self, chunk: list[Encoding]) -> list[np.ndarray]:
        return list(self.model.run(self.model.text_tokenizer.pad(chunk))["logits"])

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self.model.run(feeds)
        except (InvalidArgument, Fail, RuntimeException) as e:  # ONNX Runtime refused the client's tensors
            # (a dim the manifest leaves open, an index past a table the manifest does not size)
            raise ServingError(f"the model refused these tensors: {str(e).splitlines()[0]}",
                               ErrorKind.BAD_REQUEST) from None


def jsonable(obj: Any) -> Any:
    """Runtime results (dataclasses, numpy values) → plain JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
