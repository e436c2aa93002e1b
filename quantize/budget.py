"""The accuracy-budget loop: keep the most sensitive quantized nodes in fp32 until fidelity is met.

1. Quantize everything; if the task's budget metric (artifact/tasks.py) meets the floor, done.
2. Otherwise measure each candidate node's sensitivity: quantize *only* that node and take the
   mean output error (1 − cosine of the raw outputs against the fp32 reference, over the
   evaluation texts). One quantization per node, each measured, nothing guessed.
3. Exclude nodes greedily, most sensitive first, re-quantizing and re-measuring after each, until
   the floor is met or ``max_excluded`` nodes are excluded (past half the nodes an int8 graph
   stops paying for itself). Then fail with the best fidelity reached and its measured latency.
"""
from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from onnxformer.errors import QuantizationError
from onnxformer.quantize import speed
from onnxformer.quantize.fidelity import Evaluation, budget_metric, run_model
from onnxformer.artifact.manifest import Manifest

# build(exclude, only, out_dir) → path of the quantized graph
Builder = Callable[[Sequence[str], "Sequence[str] | None", Path], Path]
Progress = Callable[[str], None]


@dataclass
class BudgetResult:
    path: Path
    fidelity: dict[str, Any]
    excluded: list[str]
    candidates: int
    sensitivity: dict[str, float] = field(default_factory=dict)

    def record(self, budget: float, metric: str) -> dict[str, Any]:
        """What the manifest keeps about the loop: the floor, what was excluded, the worst offenders."""
        worst = dict(sorted(self.sensitivity.items(), key=lambda kv: -kv[1])[:10])
        return {"metric": metric, "floor": budget, "met": True, "excluded_nodes": self.excluded,
                "quantized_nodes": self.candidates - len(self.excluded), "candidate_nodes": self.candidates,
                "sensitivity_top10": {k: round(v, 6) for k, v in worst.items()}}


def output_error(evaluation: Evaluation, model: Path) -> float:
    """Mean over texts of 1 − cosine between the raw outputs (all of them, flattened) and the reference."""
    outputs = run_model(model, evaluation.feeds, evaluation.threads)
    errors = []
    for got, want in zip(outputs, evaluation.reference):
        a = np.nan_to_num(np.concatenate([got[k].ravel() for k in sorted(want)]), nan=0.0, posinf=0.0, neginf=0.0)
        b = np.concatenate([want[k].ravel() for k in sorted(want)])
        errors.append(1.0 - float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)))
    return float(np.mean(errors))


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
                max_excluded: int | None = None, first: tuple[Path, dict[str, Any]] | None = None) -> BudgetResult:
    """Return the least-excluded graph that meets ``budget``, or raise with the best one reached. ``first``: the
    graph with every candidate quantized and its fidelity, when the caller has built and measured it already."""
    metric = budget_metric(evaluation.task)
    path, fidelity = first if first is not None else (build([], None, work / "all"), None)
    fidelity = fidelity if fidelity is not None else evaluation.measure(path)
    everything = path
    if evaluation.score(fidelity) >= budget:
        return BudgetResult(path, fidelity, [], len(candidates))
    errors = sensitivity(build, candidates, evaluation, work, progress)
    order = sorted(candidates, key=lambda n: -errors[n])
    limit = max_excluded if max_excluded is not None else math.ceil(len(candidates) / 2)
    best = BudgetResult(path, fidelity, [], len(candidates), errors)
    for k in range(1, min(limit, len(order)) + 1):
        progress(f"{metric} {evaluation.score(best.fidelity):.4f} < {budget}: keeping {k} node(s) in fp32")
        path = build(order[:k], None, work / f"exclude-{k}")
        fidelity = evaluation.measure(path)
        if evaluation.score(fidelity) > evaluation.score(best.fidelity):
            if best.path != everything:
                shutil.rmtree(best.path.parent, ignore_errors=True)  # only the best trial is kept on disk
            best = BudgetResult(path, fidelity, order[:k], len(candidates), errors)
        elif evaluation.score(fidelity) < budget:
            shutil.rmtree(path.parent, ignore_errors=True)
        if evaluation.score(fidelity) >= budget:
            return BudgetResult(path, fidelity, order[:k], len(candidates), errors)
    raise _unmet(best, budget, metric, variant, reference, evaluation.manifest, limit)


def _unmet(best: BudgetResult, budget: float, metric: str, variant: str, reference: Path,
           manifest: Manifest, limit: int) -> QuantizationError:
    cost = speed.ratio(best.path, reference, manifest)
    return QuantizationError(
        f"{variant} cannot meet the budget {metric} >= {budget}: best {metric} {best.fidelity[metric]:.5f} "
        f"with {len(best.excluded)} of {best.candidates} quantized nodes kept in fp32 (limit {limit}), "
        f"at {cost['ratio']:.2f}x the fp32 latency ({cost['ms']:.2f} ms vs {cost['fp32_ms']:.2f} ms, batch 1); "
        "lower --budget or use fp16 / fp32-opt"
    )
