"""`onnxformer optimize` and `onnxformer quantize`: check everything, build in scratch, publish last.

Order matters for the "manifest unchanged on error" contract: user input (precision/target pair,
budget, options the recipe takes, calibration file) and the source variant (present, sha256-verified,
not already quantized) are checked before anything is built; graphs are built and measured in a
scratch directory (``recipe.make``); only a variant that passed its budget is published.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from onnxformer.artifact.cpu import this_cpu
from onnxformer.artifact.manifest import REFERENCE, Manifest, Variant, load_manifest
from onnxformer.artifact.roles import MODEL
from onnxformer.quantize.fidelity import Evaluation, budget_metric, check_budget, default_budget, prepare
from onnxformer.quantize.plan import plan
from onnxformer.quantize.recipe import Built, Options, RecipeJob, make
from onnxformer.quantize.recipes import FusedFp32
from onnxformer.quantize.source import load_source, publish, scratch_dir
from onnxformer.quantize.speed import record_latencies
from onnxformer.quantize.texts import evaluation_texts, graded_texts

Progress = Callable[[str], None]


@dataclass
class VariantResult:
    name: str
    record: Variant
    seconds: float

    def summary(self, task: str) -> str:
        metric, fidelity = budget_metric(task), self.record.fidelity
        parts = [f"{metric} {fidelity[metric]:.4f}"]
        parts += [f"{beside} {fidelity[beside]:.4f}" for beside in ("max_prob_diff", "argmax_agreement")
                  if beside in fidelity and beside != metric]  # classifiers: what the budget number means
        if fidelity.get("user_texts"):
            parts.append(f"graded on {fidelity['texts']} texts, {fidelity['user_texts']} of them yours")
        excluded = self.record.made_by.get("budget", {}).get("excluded_nodes")
        if excluded:
            parts.append(f"{len(excluded)} node(s) kept fp32")
        if self.record.speed_cpu is not None:
            parts.append(f"{self.record.speed_cpu['ratio']:.2f}x fp32 latency")
        return ", ".join(parts)


def optimize_artifact(directory: str | Path, progress: Progress = lambda _: None) -> VariantResult:
    """Add the fused ``fp32-opt`` variant."""
    start, directory = time.perf_counter(), Path(directory)
    manifest, fp32 = load_source(directory, REFERENCE)
    with scratch_dir(directory) as work:
        evaluation = prepare(directory, manifest, fp32, evaluation_texts())
        publish(directory, _fuse(directory, manifest, fp32, evaluation, work, progress))
    _record_latencies(directory, progress)
    return _result(directory, FusedFp32.name, start)


def _fuse(directory: Path, manifest: Manifest, fp32: Path, evaluation: Evaluation, work: Path,
          progress: Progress) -> Built:
    job = RecipeJob(directory, manifest, REFERENCE, {MODEL: fp32}, work, Options(), evaluation, progress, reference=fp32,
              origin_made_by=manifest.variant(REFERENCE).made_by)
    return make(FusedFp32(), job)


def quantize_artifact(
    directory: str | Path, precision: str, *, mode: str | None = None, target: str | None = None,
    calibration: str | Path | None = None, method: str | None = None, budget: float | None = None,
    source: str | None = None, smooth: bool = True, evaluation: str | Path | None = None,
    progress: Progress = lambda _: None,
) -> VariantResult:
    """Add one fp16 or int8 variant, measured against fp32 and held to ``budget``: on the shipped evaluation texts
    and the user's own — ``evaluation`` (a file, one text per line), else a fifth of ``calibration``'s texts.

    ``smooth`` (dynamic int8 only): SmoothQuant the source first, from the calibration texts.
    """
    start, directory = time.perf_counter(), Path(directory)
    recipe = plan(precision, mode, target)
    options = Options(check_budget(budget) if budget is not None else None, calibration, method, smooth, source)
    recipe.check(options)
    manifest, fp32 = load_source(directory, REFERENCE)
    floor = options.budget if options.budget is not None else default_budget(manifest.task)
    texts, user_texts = graded_texts(calibration, evaluation)
    origin = source or recipe.source
    fuse_first = origin == FusedFp32.name and origin not in manifest.variants
    origin_path = fp32
    if not fuse_first:
        manifest, origin_path = load_source(directory, origin)
    with scratch_dir(directory) as work:
        graded = prepare(directory, manifest, fp32, evaluation_texts(), user_texts=user_texts)
        fused = _fuse(directory, manifest, fp32, graded, work, progress) if fuse_first else None
        origin_fused, origin_made_by = _origin(manifest, origin, fused)
        job = RecipeJob(directory, manifest, origin, {MODEL: fused.path if fused else origin_path}, work, options,
                        graded, progress, floor, texts, fp32, origin_fused, origin_made_by)
        built = make(recipe, job)
        publish(directory, *([fused] if fused else []), built)  # a fused-on-the-way fp32-opt never alone
    if "cpu" in built.providers or fused is not None:
        _record_latencies(directory, progress)
    return _result(directory, recipe.name, start)


def _record_latencies(directory: Path, progress: Progress) -> None:
    progress(f"timing every CPU variant side by side on {this_cpu().key}")
    record_latencies(directory)


def _origin(manifest: Manifest, origin: str, fused: Built | None) -> tuple[bool, dict[str, Any]]:
    """What the job knows of its source variant: whether its graph is fused, and how it was made."""
    if fused is not None:
        return True, fused.made_by
    record = manifest.variant(origin)
    return record.fused, record.made_by


def _result(directory: Path, name: str, start: float) -> VariantResult:
    return VariantResult(name, load_manifest(directory).variant(name), time.perf_counter() - start)

