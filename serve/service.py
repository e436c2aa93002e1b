"""The model behind the endpoints: request limits, task guards, and one batching lane per operation."""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Sequence

import numpy as np

from onnxformer.errors import InputError, ServingError
from onnxformer.runtime import Model
from onnxformer.runtime.tokenizer import check_texts
from onnxformer.serve.batching import Scheduler
from onnxformer.serve.config import ServeConfig


class ModelService:
    """Validates inputs *before* they join a batch, so one bad request never fails its neighbours."""

    def __init__(self, model: Model, config: ServeConfig, scheduler: Scheduler):
        self.model = model
        self.config = config
        self.scheduler = scheduler
        self.name: str = model.manifest.get("name") or model.directory.name
        self.task = model.task
        model_limit = model.tokenizer.max_length
        self.max_tokens = min(config.max_tokens_per_text or model_limit, model_limit)

    # --- operations --------------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """(N, C) float32 embeddings and the number of tokens they cost."""
        self.require("feature-extraction", "embed", "/v1/embeddings")
        lengths = await self.admit_texts(texts)
        lane = self.scheduler.lane("embed", lambda chunk: list(self.model.embed(chunk)))
        vectors = await lane.submit(list(texts))
        return np.stack(vectors).astype(np.float32), sum(lengths)

    async def logits(self, texts: Sequence[str]) -> np.ndarray:
        """(N, L) classification logits, for the KServe text input of a text-classification model."""
        self.require("text-classification", None, "text input")
        await self.admit_texts(texts)
        lane = self.scheduler.lane("logits", self._run_logits)
        return np.stack(await lane.submit(list(texts))).astype(np.float32)

    async def classify(self, texts: Sequence[str], top_k: int | None) -> list[Any]:
        self.require("text-classification", "classify", "/v1/classify")
        await self.admit_texts(texts)
        kwargs = {} if top_k is None else {"top_k": top_k}
        lane = self.scheduler.lane(f"classify:{top_k}", lambda chunk: self.model.classify(chunk, **kwargs))
        return jsonable(await lane.submit(list(texts)))

    async def tag(self, texts: Sequence[str], aggregation: str | None) -> list[Any]:
        self.require("token-classification", "tag", "/v1/tag")
        await self.admit_texts(texts)
        kwargs = {} if aggregation is None else {"aggregation": aggregation}
        lane = self.scheduler.lane(f"tag:{aggregation}", lambda chunk: self.model.tag(chunk, **kwargs))
        return jsonable(await lane.submit(list(texts)))

    async def answer(self, pairs: Sequence[tuple[str, str]]) -> list[Any]:
        """QA: long contexts are split by the runtime, so only the question is held to the token limit."""
        self.require("question-answering", "answer", "/v1/answer")
        self.check_count(len(pairs))
        await self.admit_texts([q for q, _ in pairs])
        check_texts([c for _, c in pairs])
        lane = self.scheduler.lane("answer", lambda chunk: [self.model.answer(q, c) for q, c in chunk])
        return jsonable(await lane.submit(list(pairs)))

    async def run_raw(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw tensors: shapes differ per request, so these are never merged (no padding semantics to guess)."""
        lane = self.scheduler.lane("raw", lambda chunk: [self.model.run(f) for f in chunk], mergeable=False)
        return (await lane.submit([feeds]))[0]

    # --- guards ------------------------------------------------------------------------------------
    def require(self, task: str, method: str | None, endpoint: str) -> None:
        if self.task != task:
            raise ServingError(f"{endpoint} needs a {task} model; {self.name!r} is {self.task}", 400)
        if method and not callable(getattr(self.model, method, None)):
            raise ServingError(f"this onnxformer runtime has no Model.{method}(); upgrade onnxformer", 501)

    def check_count(self, n: int) -> None:
        if n > self.config.max_texts:
            raise ServingError(f"{n} texts in one request; the limit is {self.config.max_texts} (split it)", 413)

    async def admit_texts(self, texts: Sequence[str]) -> list[int]:
        """Check count, types and token length; returns each text's token count."""
        if isinstance(texts, (list, tuple)):
            self.check_count(len(texts))
        try:
            check_texts(texts)
        except InputError as e:
            raise ServingError(str(e), 400) from None
        # tokenizing a few dozen long texts takes milliseconds: keep it off the event loop too
        lengths = await asyncio.to_thread(self.model.tokenizer.count_tokens, list(texts))
        for i, n in enumerate(lengths):
            if n > self.max_tokens:
                raise ServingError(f"text {i} has {n} tokens; the limit is {self.max_tokens} (shorten it)", 422)
        return lengths

    def _run_logits(self, chunk: list[str]) -> list[np.ndarray]:
        batch = self.model.tokenizer.encode(chunk)
        return list(self.model.run(batch.feeds)["logits"])


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
