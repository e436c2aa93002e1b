"""Our runtime inside Triton's Python backend: what ``templates/triton_model.py`` (the repository's model.py) runs.

Triton's dynamic batcher hands ``execute`` several requests at once; their texts run as one batch of the runtime
(length-sorted under ``max_batch_tokens``, as ``onnxformer serve`` runs them) and the rows go back to each request.
A request that cannot be served (not UTF-8, too long, a missing input) gets a Triton error of its own; the others
in the batch are answered. Triton's ``pb_utils`` is passed in: this module imports without Triton.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from onnxformer.errors import OnnxformerError
from onnxformer.runtime import Model, classification

TEXT, TEXT_PAIR = "text", "text_pair"
ARTIFACT_DIR = "artifact"  # inside the version folder: the manifest, tokenizer and the one shipped variant

# what the text input yields, per task: (name, Triton data type, dims without the batch dimension)
OUTPUTS: dict[str, tuple[tuple[str, str, list[int]], ...]] = {
    "feature-extraction": (("embedding", "TYPE_FP32", [-1]),),
    "text-classification": (("logits", "TYPE_FP32", [-1]), ("label", "TYPE_STRING", [1]),
                            ("score", "TYPE_FP32", [1])),
}


class TritonModel:
    """The ``TritonPythonModel`` of a repository written by ``onnxformer triton --backend python``."""

    def __init__(self, pb_utils: Any):
        self.pb = pb_utils

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        directory = Path(args["model_repository"]) / args["model_version"] / ARTIFACT_DIR
        threads = int(params["threads"]) if params.get("threads") else None
        # sha256-verified here, as every load of ours: a repository whose files were changed does not load
        self.model = Model.load(directory, provider="cpu", variant=params["variant"], threads=threads)
        self.truncate = params.get("truncate", "false") == "true"
        if self.model.task not in OUTPUTS:
            raise OnnxformerError(f"{self.model.task} artifacts are not served by the Triton Python backend model")

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        """One runtime batch for the texts of every request Triton merged; errors stay with their request."""
        parsed: list[tuple[list[str], list[str] | None] | Exception] = []
        for request in requests:
            try:
                parsed.append(self._texts(request))
            except OnnxformerError as e:
                parsed.append(e)
        good = [p for p in parsed if not isinstance(p, Exception)]
        try:
            rows = self._run(good)
        except OnnxformerError:  # one bad text must not fail its batch-mates: run each request alone
            rows = None
        responses, start = [], 0
        for item in parsed:
            if isinstance(item, Exception):
                responses.append(self._error(item))
                continue
            n = len(item[0])
            if rows is not None:
                responses.append(self._response({k: v[start:start + n] for k, v in rows.items()}))
                start += n
                continue
            try:
                responses.append(self._response(self._run([item])))
            except OnnxformerError as e:
                responses.append(self._error(e))
        return responses

    def _texts(self, request: Any) -> tuple[list[str], list[str] | None]:
        texts = self._strings(request, TEXT)
        if texts is None:
            raise OnnxformerError(f'the request has no "{TEXT}" input (BYTES, shape [N, 1])')
        pairs = self._strings(request, TEXT_PAIR)
        if pairs is not None and len(pairs) != len(texts):
            raise OnnxformerError(f'"{TEXT_PAIR}" has {len(pairs)} texts, "{TEXT}" {len(texts)}: give one per text')
        return texts, pairs

    def _strings(self, request: Any, name: str) -> list[str] | None:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        if tensor is None:
            return None
        try:
            return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().ravel()]
        except UnicodeDecodeError:
            raise OnnxformerError(f'input "{name}" is not valid UTF-8') from None

    def _run(self, items: list[tuple[list[str], list[str] | None]]) -> dict[str, np.ndarray]:
        texts = [t for ts, _ in items for t in ts]
        if not texts:
            return {}
        if self.model.task == "feature-extraction":
            if any(p is not None for _, p in items):
                raise OnnxformerError(f'"{TEXT_PAIR}" is for cross-encoders; this model embeds texts')
            return {"embedding": self.model.embed(texts, truncate=self.truncate)}
        pairs: list[str | None] = []
        for ts, ps in items:
            pairs.extend(ps if ps is not None else [None] * len(ts))
        return classify(self.model, texts, pairs, self.truncate)

    def _response(self, outputs: dict[str, np.ndarray]) -> Any:
        return self.pb.InferenceResponse([self.pb.Tensor(k, v) for k, v in outputs.items()])

    def _error(self, error: Exception) -> Any:
        return self.pb.InferenceResponse(error=self.pb.TritonError(str(error)))


def classify(model: Model, texts: list[str], pairs: list[str | None], truncate: bool) -> dict[str, np.ndarray]:
    """logits (N, L), label (N, 1) and score (N, 1): the relevance of a (text, text_pair) as ``Model.relevance``
    gives it (a one-logit head's sigmoid, else the last label's probability); the texts with a pair and those
    without run apart (a pair is one sequence)."""
    logits = np.zeros((len(texts), model._logits_width()), np.float32)
    for paired in (False, True):
        rows = [i for i, p in enumerate(pairs) if (p is not None) == paired]
        if rows:
            second = [str(pairs[i]) for i in rows] if paired else None
            logits[rows] = model._pair_logits([texts[i] for i in rows], second, truncate)
    post = model.manifest.postprocess
    names = classification.label_names(post, logits.shape[1])
    labels = np.array([[names[i].encode()] for i in logits.argmax(axis=1)], dtype=np.object_)
    score = classification.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else classification.softmax(logits)[:, -1]
    return {"logits": logits, "label": labels, "score": score.astype(np.float32)[:, None]}
