"""Fidelity of a variant against the fp32 reference, one metric family per task.

The reference is the fp32 ONNX graph, itself validated against PyTorch at export (max |Δ| recorded in
the manifest), run on the shipped evaluation texts — plus the user's own when given (``quantize/texts.py``:
``graded_texts``) — one text at a time (batch 1, no padding, so a number reflects the model and not the
batch). Metrics:

- feature-extraction: cosine of the pooled (and, if the checkpoint says so, normalised) embeddings;
- text-classification: what users consume, the probabilities (the manifest's softmax or sigmoid):
  ``prob_agreement`` = 1 − the largest |Δp| over every text and label (the budget metric), with
  ``max_prob_diff`` itself, the worst-row and mean logits cosine, and argmax agreement beside it (argmax agreement
  alone accepted an int8 classifier whose logits cosine was 0.959);
- token-classification: per-token argmax agreement over real (unpadded) tokens;
- question-answering: span agreement (same argmax start and end).

Which of them the accuracy budget applies to, and its default floor, is the task registry's
(``artifact/tasks.py``: ``budget_metric``, ``default_floor``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from onnxformer.artifact.files import confined
from onnxformer.artifact.manifest import Manifest
from onnxformer.artifact.tasks import TASKS, budgeted
from onnxformer.errors import QuantizationError
from onnxformer.runtime.classification import activate, activation
from onnxformer.runtime.pooling import l2_normalize, pool
from onnxformer.runtime.session import create_session
from onnxformer.runtime.tokenizer import TextTokenizer

Feeds = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]
REFERENCE = "fp32 ONNX (validated against PyTorch at export), shipped evaluation texts"
USER_REFERENCE = "fp32 ONNX (validated against PyTorch at export), shipped evaluation texts and the user's"


@dataclass
class Evaluation:
    """The evaluation inputs of one artifact and the fp32 reference outputs on them."""

    manifest: Manifest
    feeds: list[Feeds]
    reference: list[Outputs]
    threads: int | None = None
    user_texts: int = 0  # how many of the texts are the user's own (the last ones)

    @property
    def task(self) -> str:
        return self.manifest.task

    def measure(self, model: Path) -> dict[str, Any]:
        """Run ``model`` on the evaluation inputs and compare it with the reference."""
        measured = compare(self.manifest, self.feeds, self.reference, run_model(model, self.feeds, self.threads))
        if self.user_texts:
            measured.update(reference=USER_REFERENCE, user_texts=self.user_texts)
        return measured

    def score(self, fidelity: dict[str, Any]) -> float:
        return float(fidelity[budget_metric(self.task)])


def check_task(task: str) -> None:
    """Only encoder tasks with a budget metric (and a comparison here) are quantized by `onnxformer quantize`."""
    handled = [t for t in budgeted() if t in _COMPARE]
    if task not in handled:
        raise QuantizationError(
            f"`onnxformer quantize` handles encoder tasks ({', '.join(handled)}); this artifact is {task}: "
            "use `onnxformer quantize-generative` for it"
        )


def budget_metric(task: str) -> str:
    return str(TASKS[task].budget_metric)


def default_budget(task: str) -> float:
    return float(TASKS[task].default_floor)  # type: ignore[arg-type]  # budgeted tasks have one


def prepare(directory: Path, manifest: Manifest, reference: Path, texts: Sequence[str],
            threads: int | None = None, user_texts: Sequence[str] = ()) -> Evaluation:
    """Tokenize the evaluation texts (then ``user_texts``, the user's own) as the runtime would and run the fp32
    reference on them."""
    feeds = evaluation_feeds(directory, manifest, [*texts, *user_texts])
    return Evaluation(manifest, feeds, run_model(reference, feeds, threads), threads, len(user_texts))


def tokenizer(directory: Path, manifest: Manifest) -> TextTokenizer:
    """The artifact's tokenizer, configured as the runtime configures it."""
    if manifest.tokenizer is None:
        raise QuantizationError(f"{directory}: the manifest records no tokenizer; re-export the model")
    return TextTokenizer(confined(directory, "tokenizer.json"), manifest.tokenizer, manifest.input_names)


def evaluation_feeds(directory: Path, manifest: Manifest, texts: Sequence[str],
                     tok: TextTokenizer | None = None) -> list[Feeds]:
    """One feed per text (batch 1, unpadded); for question answering each text asks about the next one.
    ``tok``: the artifact's tokenizer when the caller has one already."""
    tok = tok or tokenizer(directory, manifest)
    if manifest.task == "question-answering":
        pairs = [(q, texts[(i + 1) % len(texts)]) for i, q in enumerate(texts)]
        return [tok.encode([q], truncate=True, pair=[c]).feeds for q, c in pairs]
    return [tok.encode([t], truncate=True).feeds for t in texts]


def run_model(model: Path, feeds: list[Feeds], threads: int | None = None) -> list[Outputs]:
    session = create_session(model, threads=threads)
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, f))) for f in feeds]


def compare(manifest: Manifest, feeds: list[Feeds], reference: list[Outputs],
            outputs: list[Outputs]) -> dict[str, Any]:
    finite = all(np.isfinite(v).all() for out in outputs for v in out.values())
    metrics = _COMPARE[manifest.task](manifest, feeds, reference, outputs)
    # Measured on ORT's CPU provider: fp16 graphs there run some kernels in fp32 behind inserted Casts, so an
    # fp16 number is storage-precision fidelity; overflow (values stored as fp16) is reproduced faithfully.
    return {"reference": REFERENCE, "measured_on": "CPUExecutionProvider", "texts": len(feeds),
            "finite": bool(finite), **metrics}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0), np.nan_to_num(b)  # NaN grades as 0, not as NaN
    return (l2_normalize(a) * l2_normalize(b)).sum(axis=-1)


def _embeddings(manifest: Manifest, feeds: list[Feeds], ref: list[Outputs], out: list[Outputs]) -> dict:
    post = manifest.postprocess

    def pooled(o: Outputs, f: Feeds) -> np.ndarray:
        vec = pool(o["last_hidden_state"], f["attention_mask"], post.pooling or "mean")  # (1, C)
        return l2_normalize(vec) if post.normalize else vec

    cos = np.concatenate([_cosines(pooled(o, f), pooled(r, f)) for o, r, f in zip(out, ref, feeds)])
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def _classification(manifest: Manifest, feeds: list[Feeds], ref: list[Outputs], out: list[Outputs]) -> dict:
    got = np.concatenate([o["logits"] for o in out])  # (N, labels)
    want = np.concatenate([r["logits"] for r in ref])
    cos = _cosines(got, want)
    agree = np.mean(got.argmax(-1) == want.argmax(-1))
    delta = np.abs(probabilities(manifest, got) - probabilities(manifest, want))
    worst = float(np.nan_to_num(delta, nan=1.0).max())  # a NaN score is as wrong as a score can be
    return {"prob_agreement": 1.0 - worst, "max_prob_diff": worst, "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()), "argmax_agreement": float(agree)}


def probabilities(manifest: Manifest, logits: np.ndarray) -> np.ndarray:
    """The scores ``Model.classify`` returns for ``logits`` (N, labels): the checkpoint's softmax or sigmoid (a
    softmax stands in for raw logits, "none", so the metric stays in [0, 1])."""
    kind = activation(manifest.postprocess, logits.shape[-1])
    return activate(logits.astype(np.float64), "softmax" if kind == "none" else kind)


def _tokens(manifest: Manifest, feeds: list[Feeds], ref: list[Outputs], out: list[Outputs]) -> dict:
    same = total = 0
    for o, r, f in zip(out, ref, feeds):
        real = f["attention_mask"].astype(bool)  # (1, T)
        same += int((o["logits"].argmax(-1) == r["logits"].argmax(-1))[real].sum())
        total += int(real.sum())
    return {"token_agreement": same / total}


def _spans(manifest: Manifest, feeds: list[Feeds], ref: list[Outputs], out: list[Outputs]) -> dict:
    def span(o: Outputs) -> tuple[int, int]:
        return int(o["start_logits"].argmax()), int(o["end_logits"].argmax())

    agree = np.mean([span(o) == span(r) for o, r in zip(out, ref)])
    return {"span_agreement": float(agree)}


Compare = Callable[[Manifest, list[Feeds], list[Outputs], list[Outputs]], dict]
# task → the function computing its metrics; the budget applies to the registry's ``budget_metric`` among them.
_COMPARE: dict[str, Compare] = {
    "feature-extraction": _embeddings,
    "text-classification": _classification,
    "token-classification": _tokens,
    "question-answering": _spans,
}


def check_budget(budget: float) -> float:
    """A budget is a fidelity floor in (0, 1]."""
    if not isinstance(budget, (int, float)) or not 0.0 < float(budget) <= 1.0:
        raise QuantizationError(f"--budget must be in (0, 1] (a fidelity floor such as 0.99), got {budget}")
    return float(budget)
