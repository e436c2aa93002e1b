"""The accuracy-budget loop: keep the most sensitive quantized nodes in fp32 until fidelity is met.

1. Quantize everything; if the task's budget metric (artifact/tasks.py) meets the floor, done.
2. Otherwise measure each candidate node's sensitivity: the graph with *only* that node quantized, its
   mean output error (1 − cosine of the raw outputs against the fp32 reference, over the evaluation
   texts). Measured, nothing guessed.
3. Exclude nodes greedily, most sensitive first, until the floor is met or ``max_excluded`` nodes are
   excluded (past half the nodes an int8 graph stops paying for itself). Then fail with the best
   fidelity reached and its measured latency.

With a ``Trials`` stand-in (dynamic int8: ``int8.Selectable``, one session in which any set of nodes runs
quantized) no trial graph is built until the one to keep: sensitivity is measured on the
``SENSITIVITY_TEXTS`` texts the fully quantized graph got most wrong (the texts a worst-text budget is
decided on), each exclusion is screened on those texts first (the others counted as exact: a score
that misses the floor then cannot meet it on all texts) and on every text only when it passes, and the
first exclusion that meets the floor is built, measured for real and kept (past it, the loop goes on
building, as without a stand-in). Without one, every trial is a graph built and measured.
"""
from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Protocol, Sequence

import numpy as np

from onnxformer.artifact.manifest import Manifest
from onnxformer.errors import QuantizationError
from onnxformer.quantize import speed
from onnxformer.quantize.fidelity import Evaluation, Feeds, Outputs, budget_metric, compare, run_model

# build(exclude, only, out_dir) → path of the quantized graph
Builder = Callable[[Sequence[str], "Sequence[str] | None", Path], Path]
Progress = Callable[[str], None]
SENSITIVITY_TEXTS = 8  # texts a ``Trials`` stand-in ranks the nodes on: those the fully quantized graph got most wrong


class Trials(Protocol):
    """Runs the graph with any set of candidate nodes quantized, without building it (``int8.Selectable``)."""

    def run(self, quantized: Collection[str], feeds: Sequence[Feeds]) -> list[Outputs]: ...


@dataclass
class BudgetResult:
    path: Path
    fidelity: dict[str, Any]
    excluded: list[str]
    candidates: int
    sensitivity: dict[str, float] = field(default_factory=dict)
    sensitivity_texts: int | None = None  # texts the sensitivity was measured on (None: every evaluation text)

    def record(self, budget: float, metric: str) -> dict[str, Any]:
        """What the manifest keeps about the loop: the floor, what was excluded, the worst offenders."""
        worst = dict(sorted(self.sensitivity.items(), key=lambda kv: -kv[1])[:10])
        record = {"metric": metric, "floor": budget, "met": True, "excluded_nodes": self.excluded,
                  "quantized_nodes": self.candidates - len(self.excluded), "candidate_nodes": self.candidates,
                  "sensitivity_top10": {k: round(v, 6) for k, v in worst.items()}}
        if self.sensitivity_texts is not None:
            record["sensitivity_texts"] = self.sensitivity_texts
        return record


def output_errors(outputs: Sequence[Outputs], reference: Sequence[Outputs]) -> list[float]:
    """Per text, 1 − cosine between the raw outputs (all of them, flattened) and the reference."""
    errors = []
    for got, want in zip(outputs, reference):
        a = np.nan_to_num(np.concatenate([got[k].ravel() for k in sorted(want)]), nan=0.0, posinf=0.0, neginf=0.0)
        b = np.concatenate([want[k].ravel() for k in sorted(want)])
        errors.append(1.0 - float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)))
    return errors


def output_error(evaluation: Evaluation, model: Path) -> float:
    """Mean over texts of 1 − cosine between the raw outputs (all of them, flattened) and the reference."""
    return float(np.mean(output_errors(run_model(model, evaluation.feeds, evaluation.threads), evaluation.reference)))


def sensitivity(build: Builder, candidates: Sequence[str], evaluation: Evaluation, work: Path,
                progress: Progress) -> dict[str, float]:
    """Error of the graph with only one node quantized, for each candidate. Each trial graph is nearly the
    full fp32 model (one node quantized) and is deleted once measured: kept, they made the scratch space ~25×
    the model (MiniLM: 2.3 GB for 90 MB — one fp32-sized copy per candidate MatMul)."""
    errors = {}
    for i, node in enumerate(candidates):
        progress(f"sensitivity {i + 1}/{len(candidates)}")
        trial = work / f"only-{i}"
        errors[node] = output_error(evaluation, build([], [node], trial))
        shutil.rmtree(trial, ignore_errors=True)
    return errors


def meet_budget(build: Builder, candidates: Sequence[str], evaluation: Evaluation, budget: float, work: Path,
                variant: str, reference: Path, progress: Progress = lambda _: None,
                max_excluded: int | None = None, first: tuple[Path, dict[str, Any]] | None = None,
                trials: Callable[[Path], Trials] | None = None) -> BudgetResult:
    """Return the least-excluded graph that meets ``budget``, or raise with the best one reached. ``first``: the
    graph with every candidate quantized and its fidelity, when the caller has built and measured it already;
    ``trials``: opens, from the fully quantized graph, a stand-in that runs any trial without building it (the
    module's docstring); called only when that graph misses the budget."""
    metric = budget_metric(evaluation.task)
    path, fidelity = first if first is not None else (build([], None, work / "all"), None)
    fidelity = fidelity if fidelity is not None else evaluation.measure(path)
    everything = path
    if evaluation.score(fidelity) >= budget:
        return BudgetResult(path, fidelity, [], len(candidates))
    limit = max_excluded if max_excluded is not None else math.ceil(len(candidates) / 2)
    if trials is None:
        errors, texts = sensitivity(build, candidates, evaluation, work, progress), None
        order = sorted(candidates, key=lambda n: -errors[n])
        ks = range(1, min(limit, len(order)) + 1)
    else:
        screen = _Screen(trials(everything), candidates, evaluation, progress)
        errors, texts = screen.sensitivity(), len(screen.worst)
        order = sorted(candidates, key=lambda n: -errors[n])
        ks = screen.exclusions(order, budget, limit)
    best = BudgetResult(path, fidelity, [], len(candidates), errors, texts)
    for k in ks:
        progress(f"{metric} {evaluation.score(best.fidelity):.4f} < {budget}: keeping {k} node(s) in fp32")
        path = build(order[:k], None, work / f"exclude-{k}")
        fidelity = evaluation.measure(path)
        if evaluation.score(fidelity) > evaluation.score(best.fidelity):
            if best.path != everything:
                shutil.rmtree(best.path.parent, ignore_errors=True)  # only the best trial is kept on disk
            best = BudgetResult(path, fidelity, order[:k], len(candidates), errors, texts)
        elif evaluation.score(fidelity) < budget:
            shutil.rmtree(path.parent, ignore_errors=True)
        if evaluation.score(fidelity) >= budget:
            return BudgetResult(path, fidelity, order[:k], len(candidates), errors, texts)
    raise _unmet(best, budget, metric, variant, reference, evaluation.manifest, limit)


class _Screen:
    """The budget loop's trials run on a ``Trials`` stand-in: what one trial measured chooses the texts of the next."""

    def __init__(self, trials: Trials, candidates: Sequence[str], evaluation: Evaluation, progress: Progress):
        self.trials, self.candidates, self.evaluation, self.progress = trials, list(candidates), evaluation, progress
        everything = trials.run(self.candidates, evaluation.feeds)
        errors = output_errors(everything, evaluation.reference)
        self.worst = sorted(np.argsort(-np.array(errors), kind="stable")[:SENSITIVITY_TEXTS].tolist())

    def sensitivity(self) -> dict[str, float]:
        """Each candidate's mean output error alone quantized, on the texts the fully quantized graph got most wrong."""
        feeds = [self.evaluation.feeds[i] for i in self.worst]
        reference = [self.evaluation.reference[i] for i in self.worst]
        errors = {}
        for i, node in enumerate(self.candidates):
            self.progress(f"sensitivity {i + 1}/{len(self.candidates)} ({len(feeds)} texts)")
            errors[node] = float(np.mean(output_errors(self.trials.run([node], feeds), reference)))
        return errors

    def exclusions(self, order: Sequence[str], budget: float, limit: int) -> range:
        """The exclusions the loop builds: from the first that meets ``budget`` on the stand-in (on to ``limit``, should
        the built graph miss it), or only the best one screened when none does (built to report it)."""
        best, best_score = 1, -math.inf
        for k in range(1, min(limit, len(order)) + 1):
            score = self.score(order[k:], budget)
            if score >= budget:
                return range(k, min(limit, len(order)) + 1)
            if score > best_score:
                best, best_score = k, score
        return range(best, best + 1)

    def score(self, quantized: Sequence[str], budget: float) -> float:
        """The budget metric with ``quantized`` quantized: on the worst texts first, the others counted as exact (an
        upper bound for a metric that a text matching the reference never lowers: min, mean, agreement); on every
        text only when that bound meets ``budget``."""
        ev = self.evaluation
        outputs = list(ev.reference)
        rest = [i for i in range(len(ev.feeds)) if i not in self.worst]
        for texts in (self.worst, rest):
            for i, out in zip(texts, self.trials.run(quantized, [ev.feeds[i] for i in texts])):
                outputs[i] = out
            score = ev.score(compare(ev.manifest, ev.feeds, ev.reference, outputs))
            if score < budget:
                break
        return score


def _unmet(best: BudgetResult, budget: float, metric: str, variant: str, reference: Path,
           manifest: Manifest, limit: int) -> QuantizationError:
    cost = speed.ratio(best.path, reference, manifest)
    return QuantizationError(
        f"{variant} cannot meet the budget {metric} >= {budget}: best {metric} {best.fidelity[metric]:.5f} "
        f"with {len(best.excluded)} of {best.candidates} quantized nodes kept in fp32 (limit {limit}), "
        f"at {cost['ratio']:.2f}x the fp32 latency ({cost['ms']:.2f} ms vs {cost['fp32_ms']:.2f} ms, batch 1); "
        "lower --budget or use fp16 / fp32-opt"
    )
