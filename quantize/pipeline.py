"""`onnxformer optimize` and `onnxformer quantize`: check everything, build in scratch, publish last.

Order matters for the "manifest unchanged on error" contract: user input (precision/target pair,
budget, calibration file) and the source variant (present, sha256-verified, not already quantized)
are checked before anything is built; graphs are built and measured in a scratch directory; only
a variant that passed its budget is moved into place and recorded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from onnxformer.errors import QuantizationError
from onnxformer.quantize import fp16, int8, optimize, smoothing, speed
from onnxformer.quantize.budget import meet_budget
from onnxformer.quantize.fidelity import Evaluation, budget_metric, check_budget, default_budget, evaluation_feeds, prepare
from onnxformer.quantize.shapes import annotate
from onnxformer.quantize.source import MODEL_FILE, load_source, publish_variant, scratch_dir
from onnxformer.quantize.texts import calibration_texts, evaluation_texts
from onnxformer.quantize.variants import Plan, plan

Progress = Callable[[str], None]
# fp32-opt must reproduce fp32 to this fidelity on every task metric (fusions are exact up to fp32 rounding).
FUSION_FLOOR = 0.999


@dataclass
class VariantResult:
    name: str
    record: dict[str, Any]
    seconds: float

    def summary(self, task: str) -> str:
        metric = budget_metric(task)
        parts = [f"{metric} {self.record['fidelity'][metric]:.4f}"]
        excluded = self.record["made_by"].get("budget", {}).get("excluded_nodes")
        if excluded:
            parts.append(f"{len(excluded)} node(s) kept fp32")
        if "speed_cpu" in self.record:
            parts.append(f"{self.record['speed_cpu']['ratio']:.2f}x fp32 latency")
        return ", ".join(parts)


def optimize_artifact(directory: str | Path, progress: Progress = lambda _: None) -> VariantResult:
    """Add the fused ``fp32-opt`` variant."""
    start, directory = time.perf_counter(), Path(directory)
    manifest, source = load_source(directory, "fp32")
    with scratch_dir(directory) as work:
        progress("fusing (onnxruntime.transformers.optimizer)")
        path, made_by, fidelity = _fuse(directory, manifest, source, work, progress)
        _publish(directory, optimize.VARIANT, path, "fp32", optimize.PROVIDERS, made_by, fidelity)
    return _result(directory, optimize.VARIANT, start)


def _fuse(directory: Path, manifest: dict[str, Any], source: Path, work: Path,
          progress: Progress) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    path, made_by = optimize.fuse(source, manifest["architecture"], work / "fused")
    progress("measuring fp32-opt against fp32")
    evaluation = prepare(directory, manifest, source, evaluation_texts())
    fidelity = evaluation.measure(path)
    if evaluation.score(fidelity) < FUSION_FLOOR:
        raise QuantizationError(
            f"the fused graph disagrees with fp32 ({budget_metric(manifest['task'])} "
            f"{evaluation.score(fidelity):.4f} < {FUSION_FLOOR}); report this model — use the fp32 variant meanwhile"
        )
    return path, made_by, fidelity


def quantize_artifact(
    directory: str | Path, precision: str, *, mode: str | None = None, target: str | None = None,
    calibration: str | Path | None = None, method: str | None = None, budget: float | None = None,
    source: str | None = None, smooth: bool = True, progress: Progress = lambda _: None,
) -> VariantResult:
    """Add one fp16 or int8 variant, measured against fp32 and held to ``budget``.

    ``smooth`` (dynamic int8 only): SmoothQuant the source first, from the calibration texts.
    """
    start, directory = time.perf_counter(), Path(directory)
    chosen = plan(precision, mode, target)
    floor = check_budget(budget) if budget is not None else None
    _check_options(chosen, method, calibration, smooth)
    manifest, fp32_path = load_source(directory, "fp32")
    floor = floor if floor is not None else default_budget(manifest["task"])
    cal = calibration_texts(calibration)
    origin = source or chosen.source
    fuse_first = origin == optimize.VARIANT and origin not in manifest["variants"]
    if not fuse_first:
        manifest, origin_path = load_source(directory, origin)
    with scratch_dir(directory) as work:
        if fuse_first:  # published together with the quantized variant, never alone
            origin_path, opt_made_by, opt_fidelity = _fuse(directory, manifest, fp32_path, work, progress)
        evaluation = prepare(directory, manifest, fp32_path, evaluation_texts())
        build = _BUILDERS[chosen.precision]
        options = _Options(cal, method, floor, smooth)
        path, made_by = build(directory, manifest, chosen, origin_path, evaluation, options, work, progress)
        made_by = {"from": origin, **made_by, **_fusions(manifest, origin)}
        fidelity = evaluation.measure(path)
        if fuse_first:
            _publish(directory, optimize.VARIANT, origin_path, "fp32", optimize.PROVIDERS, opt_made_by, opt_fidelity)
            made_by["fused_ops"] = opt_made_by["fused_ops"]
        extra = {"speed_cpu": speed.ratio(path, fp32_path, manifest)} if chosen.target == "cpu" else {}
        _publish(directory, chosen.name, path, chosen.precision, list(chosen.providers), made_by, fidelity, extra)
    return _result(directory, chosen.name, start)


@dataclass
class _Options:
    cal: Sequence[str]
    method: str | None
    floor: float
    smooth: bool


def _check_options(chosen: Plan, method: str | None, calibration: str | Path | None, smooth: bool) -> None:
    from onnxformer.quantize.calibration import calibration_method

    if calibration is not None and chosen.mode == "dynamic" and not smooth:
        raise QuantizationError(
            "--calibration feeds static int8 (ranges), fp16 (guard inputs) and smoothing; dynamic int8 without "
            "smoothing measures its ranges at run time: drop --no-smooth or --calibration"
        )
    if not smooth and chosen.mode != "dynamic":
        raise QuantizationError("--no-smooth applies to dynamic int8 only; drop it")
    if method is not None:
        if chosen.mode != "static":
            raise QuantizationError("--method chooses the calibration of static int8; add --mode static or drop it")
        calibration_method(method)


def _fp16(directory: Path, manifest: dict[str, Any], chosen: Plan, source: Path, evaluation: Evaluation,
          options: _Options, work: Path, progress: Progress) -> tuple[Path, dict]:
    progress("fp16: measuring activation ranges on guard inputs")
    feeds = fp16.guard_feeds(directory, manifest, options.cal)
    path, made_by = fp16.convert(source, feeds, work / "fp16", work)
    score = evaluation.score(evaluation.measure(path))
    if score < options.floor:
        raise QuantizationError(
            f"{chosen.name} reaches {budget_metric(evaluation.task)} {score:.4f} < budget {options.floor}; "
            "use fp32-opt for this model or lower --budget"
        )
    return path, made_by


def smooth_for_int8(directory: Path, manifest: dict[str, Any], source: Path, recipe: int8.Int8Recipe,
                    texts: Sequence[str], out: Path) -> tuple[Path, smoothing.Plan]:
    """SmoothQuant every node ``recipe`` would quantize, from ``texts``; written to ``out``."""
    feeds = evaluation_feeds(directory, manifest, texts)
    nodes = int8.candidate_nodes(source, recipe.op_types)
    return smoothing.smooth(source, nodes, feeds, out, recipe.reduce_range)


def _int8(directory: Path, manifest: dict[str, Any], chosen: Plan, source: Path, evaluation: Evaluation,
          options: _Options, work: Path, progress: Progress) -> tuple[Path, dict]:
    from onnxformer.quantize.calibration import text_reader

    vnni, cal, floor = int8.has_vnni(), options.cal, options.floor
    recipe = int8.Int8Recipe(chosen.mode or "dynamic", chosen.target, reduce_range=not vnni,
                             method=(options.method or "minmax") if chosen.mode == "static" else None)
    reader = cache = None
    extra: dict[str, Any] = {}
    if recipe.mode == "static":
        source = annotate(source, work / "typed" / MODEL_FILE)  # contrib-op tensors need types to be calibrated
        reader, cache = text_reader(directory, manifest, cal), work / "calibration.json"
    elif options.smooth:
        progress(f"{chosen.name}: smoothing activation outliers into the weights ({len(cal)} calibration texts)")
        source, plan = smooth_for_int8(directory, manifest, source, recipe, cal, work / "smoothed" / MODEL_FILE)
        extra["smoothing"] = plan.record(len(cal))

    def build(exclude: Sequence[str], only: Sequence[str] | None, out: Path) -> Path:
        return int8.quantize(source, recipe, out, exclude, only, reader, cache)

    progress(f"{chosen.name}: quantizing ({recipe.mode})")
    candidates = int8.candidate_nodes(source, recipe.op_types)
    result = meet_budget(build, candidates, evaluation, floor, work, chosen.name, _fp32(directory), progress)
    made_by = {"tool": f"onnxruntime.quantization.quantize_{recipe.mode}", **recipe.options(), "cpu_vnni": vnni,
               "budget": result.record(floor, budget_metric(evaluation.task))}
    if recipe.mode == "static":
        made_by["calibration_texts"] = len(cal)
    return result.path, {**made_by, **extra}


_BUILDERS = {"fp16": _fp16, "int8": _int8}


def _fp32(directory: Path) -> Path:
    return directory / "fp32" / MODEL_FILE


def _fusions(manifest: dict[str, Any], origin: str) -> dict[str, Any]:
    made_by = manifest["variants"].get(origin, {}).get("made_by", {})
    return {"fused_ops": made_by["fused_ops"]} if "fused_ops" in made_by else {}


def _publish(directory: Path, name: str, path: Path, precision: str, providers: list[str], made_by: dict[str, Any],
             fidelity: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    publish_variant(directory, name, path, precision=precision, providers=providers, made_by=made_by,
                    fidelity=fidelity, extra=extra or {})


def _result(directory: Path, name: str, start: float) -> VariantResult:
    from onnxformer.runtime.manifest import load_manifest

    return VariantResult(name, load_manifest(directory)["variants"][name], time.perf_counter() - start)
