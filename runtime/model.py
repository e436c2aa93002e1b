"""`Model`: a verified artifact on the best available provider, with one method per task.

    model = Model.load("out/")                      # provider="auto", variant="auto"
    model.embed(["a sentence", "another"])          # (N, C) float32
    model.classify(texts, top_k=2)                  # [[{"label", "score"}, ...], ...]
    model.tag(texts, aggregation="simple")          # [[{"entity_group", "score", "word", "start", "end"}, ...], ...]
    model.answer(question, context)                 # {"score", "start", "end", "answer"}
    model.run({"input_ids": ..., ...})              # raw tensors
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tokenizers import Encoding

from onnxformer.artifact.files import confined
from onnxformer.artifact.manifest import Manifest
from onnxformer.artifact.tasks import get_task
from onnxformer.errors import InputError, InputKind
from onnxformer.runtime import classification, pairs, qa, tagging
from onnxformer.runtime.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, plan_batches
from onnxformer.runtime.binding import Runner
from onnxformer.runtime.loader import LoadOptions, open_artifact
from onnxformer.runtime.pairs import TextInput
from onnxformer.runtime.pooling import l2_normalize, pool, truncate_dims
from onnxformer.runtime.tokenizer import TextTokenizer, check_texts

# per batch: (feeds, encodings) → one result per encoding
BatchFn = Callable[[dict[str, np.ndarray], Sequence[Encoding]], list[Any]]


class Model:
    """A loaded artifact. Thread-safe: one Model may serve many threads (sessions and tokenizer are shared
    read-only; I/O-binding buffers are per thread)."""

    def __init__(self, directory: Path, manifest: Manifest, variant: str, provider: str, runner: Runner,
                 tokenizer: TextTokenizer | None, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, reason: str = "",
                 passed_over: dict[str, str] | None = None):
        self.directory, self.manifest, self.variant, self.provider = directory, manifest, variant, provider
        self.runner, self.tokenizer = runner, tokenizer
        self.session = runner.session
        self.task: str = manifest.task
        self.input_names = list(runner.inputs)
        self.output_names = list(runner.outputs)
        self.max_batch_tokens, self.max_batch_size = max_batch_tokens, max_batch_size
        self.reason = reason  # why this variant: logged at load, kept for callers to show
        # variant="auto": the variants that failed to open (name → why) and so were passed over for this one
        self.passed_over: dict[str, str] = dict(passed_over or {})
        # Per-call activation scales (dynamic int8) would make a text's vector depend on its batch-mates (and
        # their padding); one sequence per call keeps one text → one vector, as the budget measured it.
        self.one_sequence_per_call = manifest.variant(variant).one_sequence_per_call

    @classmethod
    def load(cls, directory: str | Path, provider: str | Sequence[str] = "auto", variant: str = "auto",
             budget: float | dict[str, float] | None = None, threads: int | None = None, strict: bool = False,
             *, io_binding: bool | None = None, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
             max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, trt_cache: str | Path | None = None,
             measure: bool = True, variant_fallback: bool = True) -> Model:
        """Verify and load an artifact. ``provider``: "auto" (TensorRT → CUDA → CPU), a name or a list;
        ``variant``: "auto" (fastest whose recorded fidelity meets ``budget``) or a name; ``strict``: any
        fallback is an error instead of a logged warning; ``measure``: on a CPU of a kind the artifact's latencies
        were not recorded on, time the eligible variants at load (≤ 1 s, cached) to choose the fastest;
        ``variant_fallback``: with ``variant="auto"``, a variant that fails to open (damaged file) gives way to the
        next best — logged at WARNING and kept in ``passed_over`` — unless False (or ``strict``): then it is an
        error."""
        directory = Path(directory)
        options = LoadOptions(provider, variant, budget, threads, strict, io_binding, max_batch_size,
                              Path(trt_cache) if trt_cache else None, measure, variant_fallback=variant_fallback)
        opened = open_artifact(directory, options)
        spec = opened.manifest.tokenizer
        tokenizer = (TextTokenizer(confined(directory, "tokenizer.json"), spec, list(opened.runner.inputs))
                     if spec is not None else None)
        return cls(directory, opened.manifest, opened.variant, opened.provider, opened.runner, tokenizer,
                   max_batch_tokens, max_batch_size, opened.reason, opened.passed_over)

    # --- raw -----------------------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw tensors in, raw tensors out (names as in the manifest)."""
        if not isinstance(feeds, dict):
            raise InputError(f"run() takes a dict of input name → array; this model takes {self.input_names}")
        return self.runner.run(feeds)

    # --- tasks ---------------------------------------------------------------------------------------------
    def embed(self, texts: Sequence[str], truncate: bool = False, normalize: bool | None = None,
              max_batch_tokens: int | None = None, batch_size: int | None = None, dimensions: int | None = None,
              prompt_name: str | None = None, prompt: str | None = None) -> np.ndarray:
        """Sentence embeddings (N, C) float32, pooled and normalised as the checkpoint specifies. ``dimensions``:
        the first that many components (Matryoshka; default the checkpoint's ``truncate_dim``), renormalised
        when the model normalises. ``prompt_name`` / ``prompt``: the text prepended to every input, as
        sentence-transformers' ``encode`` (default: the checkpoint's default prompt)."""
        self._require("feature-extraction", "embed")
        vectors = self.embed_encodings(self.encode_prompted(texts, prompt_name, prompt, truncate), normalize,
                                       max_batch_tokens, batch_size)
        return truncate_dims(vectors, dimensions or self.manifest.postprocess.truncate_dim, self.normalizes(normalize))

    def encode_prompted(self, texts: Sequence[str], prompt_name: str | None = None, prompt: str | None = None,
                        truncate: bool = False) -> list[Encoding]:
        """Encodings of ``texts`` with the model's (or the given) prompt prepended, as embed() runs them."""
        check_texts(texts)
        prefix = self.manifest.postprocess.prompt(prompt_name, prompt)
        return self.text_tokenizer.encodings([prefix + t for t in texts] if prefix else list(texts), truncate=truncate)

    def normalizes(self, normalize: bool | None = None) -> bool:
        """Whether embeddings come out unit length (the checkpoint's Normalize, unless overridden)."""
        return normalize if normalize is not None else self.manifest.postprocess.normalize

    def embed_encodings(self, encodings: Sequence[Encoding], normalize: bool | None = None,
                        max_batch_tokens: int | None = None, batch_size: int | None = None) -> np.ndarray:
        """``embed`` of texts already tokenized by ``self.text_tokenizer.encodings`` (the server tokenizes once: to
        admit a request, then to run it)."""
        self._require("feature-extraction", "embed")
        post = self.manifest.postprocess
        name = "last_hidden_state" if "last_hidden_state" in self.output_names else self.output_names[0]
        unit = self.normalizes(normalize)

        def batch(feeds: dict[str, np.ndarray], _: Sequence[Encoding]) -> list[np.ndarray]:
            states = self.runner.run(feeds)[name].astype(np.float32)  # (B, T, C)
            pooled = pool(states, feeds["attention_mask"], post.pooling or "mean")  # (B, C)
            return list(l2_normalize(pooled) if unit else pooled)

        rows = self._batched(list(encodings), batch, max_batch_tokens, batch_size)
        return np.stack(rows).astype(np.float32)

    def classify(self, texts: Sequence[TextInput] | TextInput, top_k: int | None = 1,
                 truncate: bool = False) -> list[list[dict[str, Any]]]:
        """Per input, the ``top_k`` labels (None: all) with softmax/sigmoid scores, best first. An input is a
        text, or a text pair for cross-encoders: a ``(text, text_pair)`` tuple or transformers' pipeline dict
        ``{"text": ..., "text_pair": ...}`` (one pair alone is one input)."""
        self._require("text-classification", "classify")
        logits = self._pair_logits(*pairs.split(texts), truncate)
        return classification.top_labels(logits, self.manifest.postprocess, top_k)

    def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None, truncate: bool = False,
               return_documents: bool = False) -> list[dict[str, Any]]:
        """Documents ranked by a cross-encoder's relevance to ``query``, best first, as sentence-transformers'
        ``CrossEncoder.rank``: ``{"corpus_id", "score"(, "text")}``."""
        self._require("text-classification", "rerank")
        if not isinstance(query, str) or isinstance(documents, str):
            raise InputError("rerank() takes one query string and a list of document strings")
        check_texts(list(documents))
        scores = self.relevance([(query, d) for d in documents], truncate)
        order = np.argsort(-scores, kind="stable")[: classification.check_top_k(top_k, len(documents))]
        return [{"corpus_id": int(i), "score": float(scores[i]), **({"text": documents[i]} if return_documents else {})}
                for i in order]

    def relevance(self, pairs_: Sequence[tuple[str, str]], truncate: bool = False, raw: bool = False) -> np.ndarray:
        """(N,) cross-encoder scores of (query, document) pairs: the sigmoid of a one-logit head
        (CrossEncoder.predict's default), else the softmax probability of the last label; ``raw``: that logit."""
        self._require("text-classification", "relevance")
        first, second = pairs.split(list(pairs_))
        if second is None:
            raise InputError("relevance() takes (query, document) pairs")
        logits = self._pair_logits(first, second, truncate)  # (N, L)
        if raw:
            return logits[:, -1]
        return classification.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else classification.softmax(logits)[:, -1]

    def _pair_logits(self, texts: Sequence[str], pair: Sequence[str] | None, truncate: bool) -> np.ndarray:
        def batch(feeds: dict[str, np.ndarray], _: Sequence[Encoding]) -> list[np.ndarray]:
            return list(self.runner.run(feeds)["logits"].astype(np.float32))

        return np.stack(self._batched(self.text_tokenizer.encodings(texts, truncate=truncate, pair=pair), batch))

    def tag(self, texts: Sequence[str], aggregation: str = "simple", ignore_labels: Sequence[str] = ("O",),
            truncate: bool = False) -> list[list[dict[str, Any]]]:
        """Per text, its entities with character offsets ("none": every token; "simple": adjacent tokens
        grouped; "first"/"average"/"max": whole words first, then grouped)."""
        self._require("token-classification", "tag")
        tagging.check_aggregation(aggregation)
        encodings = self.text_tokenizer.encodings(texts, truncate=truncate)
        num_labels = self._logits_width()
        labels = classification.label_names(self.manifest.postprocess, num_labels)

        def batch(feeds: dict[str, np.ndarray], encs: Sequence[Encoding]) -> list[np.ndarray]:
            logits = self.runner.run(feeds)["logits"].astype(np.float32)  # (B, T, L)
            return [logits[i, : len(e.ids)] for i, e in enumerate(encs)]

        logits = self._batched(encodings, batch)
        return [tagging.entities(t, e, lg, labels, self.tokenizer, aggregation, tuple(ignore_labels))
                for t, e, lg in zip(texts, encodings, logits)]

    def answer(self, question: str, context: str, top_k: int = 1, max_answer_len: int = 15,
               doc_stride: int | None = None, max_seq_len: int | None = None,
               handle_impossible_answer: bool = False, align_to_words: bool = True) -> dict[str, Any] | list[dict]:
        """The best answer span in ``context`` ({"score", "start", "end", "answer"}; a list when top_k > 1).
        A context longer than the window is split into overlapping windows (``doc_stride`` tokens shared)."""
        self._require("question-answering", "answer")
        if not isinstance(question, str) or not isinstance(context, str):
            raise InputError("answer() takes one question string and one context string")
        check_texts([question, context])
        options = qa.QAOptions(top_k, max_answer_len, handle_impossible_answer, align_to_words).check()
        window, stride = qa.window_defaults(self.text_tokenizer.max_length, max_seq_len, doc_stride)
        spans = self.text_tokenizer.spans(question, context, window, stride)

        def batch(feeds: dict[str, np.ndarray], encs: Sequence[Encoding]) -> list[tuple]:
            out = self.runner.run(feeds)
            start, end = out["start_logits"].astype(np.float32), out["end_logits"].astype(np.float32)
            return [(e, start[i, : len(e.ids)], end[i, : len(e.ids)]) for i, e in enumerate(encs)]

        windows = self._batched(spans, batch)
        return qa.best_answers(context, windows, self.text_tokenizer.cls_id, options)

    # --- internals -----------------------------------------------------------------------------------------
    def _batched(self, encodings: Sequence[Encoding], fn: BatchFn, max_batch_tokens: int | None = None,
                 batch_size: int | None = None) -> list[Any]:
        """Run ``fn`` over length-sorted batches; results come back in the order of ``encodings``."""
        cap = 1 if self.one_sequence_per_call else batch_size or self.max_batch_size
        if self.provider == "tensorrt":  # the engine's shape profile ends at max_batch_size
            cap = min(cap, self.max_batch_size)
        plan = plan_batches([len(e.ids) for e in encodings], max_batch_tokens or self.max_batch_tokens, cap)
        results: list[Any] = [None] * len(encodings)
        for indices in plan:
            chosen = [encodings[i] for i in indices]
            for i, value in zip(indices, fn(self.text_tokenizer.pad(chosen), chosen)):
                results[i] = value
        return results

    @property
    def text_tokenizer(self) -> TextTokenizer:
        """The tokenizer of a task that takes text (every one but raw, whose artifacts ship none)."""
        if self.tokenizer is None:
            raise InputError(f"{self.directory} has no tokenizer (task {self.task}); pass tensors to run()",
                             InputKind.WRONG_TASK)
        return self.tokenizer

    def _require(self, task: str, method: str) -> None:
        if self.task != task:
            raise InputError(f"{method}() needs a {task} model; {self.directory} is {self.task} "
                             f"(use {get_task(self.task).method}() or run())", InputKind.WRONG_TASK)

    def _logits_width(self) -> int:
        spec = self.manifest.output("logits")
        if spec is not None and isinstance(spec.shape[-1], int):
            return int(spec.shape[-1])
        return len(self.manifest.postprocess.id2label) or 2

    def __repr__(self) -> str:
        return (f"Model({str(self.directory)!r}, task={self.task!r}, provider={self.provider!r}, "
                f"variant={self.variant!r})")

