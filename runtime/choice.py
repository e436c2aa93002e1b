"""Variant choice: per provider, the fastest variant whose recorded fidelity meets the accuracy budget.

Records come from the quantize stage (``precision``, ``providers``, ``fidelity``, ``graph``, ``latency``: the
latencies it measured with the CPU it measured them on); the chooser reads them defensively — a variant without
a fidelity number for the budget metric is never assumed good, except ``fp32`` itself, which is the reference.

On the CPU, "fastest" is measured, not assumed: when every eligible variant has a latency recorded on a CPU of
this kind (same model name and kernel flags, ``artifact/cpu.py``) or measured at load (``runtime/latency.py``),
the one with the lowest wins. Without measurements (or off), a fixed precision order stands in.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

from onnxformer.artifact.cpu import CpuInfo, this_cpu
from onnxformer.artifact.manifest import REFERENCE, Manifest, Variant
from onnxformer.artifact.tasks import TASKS, get_task
from onnxformer.errors import ProviderError
from onnxformer.runtime.providers import REGISTRY

log = logging.getLogger("onnxformer.runtime")

# Expected speed per provider, fastest precision first. Within a precision: a measured CPU latency ratio when the
# quantize stage recorded one, then fused graphs first (last for TensorRT, which fuses itself and cannot run
# ONNX Runtime's contrib ops).
_PRECISION_ORDER: dict[str, tuple[str, ...]] = {"tensorrt": ("int8", "fp16", "fp32"), "cuda": ("fp16", "fp32"),
                                                 "cpu": ("int8", "fp32")}


@dataclass(frozen=True)
class Choice:
    variant: str
    reason: str
    eligible: tuple[str, ...] = ()  # every variant that met the budget on this provider
    measured: bool = False  # chosen by latencies measured on a CPU of this kind


@dataclass(frozen=True)
class Rejection:
    variant: str
    reason: str
    budget: bool  # rejected for its fidelity (worth telling the user), not because the provider cannot run it


def budget_floors(task: str, budget: float | dict[str, float] | None) -> dict[str, float]:
    """``None`` → the task's default floor; a number → that floor on the task's metric; a dict → as given."""
    spec = TASKS.get(task)
    metric, default = (spec.budget_metric, spec.default_floor) if spec and spec.budget_metric else ("min_cosine", 0.99)
    if budget is None:
        return {metric: default if default is not None else 0.99}
    if isinstance(budget, dict):
        return {str(k): float(v) for k, v in budget.items()}
    if isinstance(budget, (int, float)) and not isinstance(budget, bool) and 0.0 < budget <= 1.0:
        return {metric: float(budget)}
    raise ProviderError(f"budget {budget!r} is not a fidelity floor in (0, 1] (e.g. 0.99) or a {{metric: floor}} dict")


def supports(provider: str, name: str, record: Variant, generative: bool = False) -> str | None:
    """Why ``provider`` cannot run variant ``name``, or None when it can. Generative variants list their
    providers themselves (fp16/int4 decoders run on the CPU too); encoder variants also need a precision the
    provider runs well."""
    if not generative and record.precision not in REGISTRY[provider].precisions:
        return f"variant {name} is {record.precision or 'of unknown precision'}, which {provider} does not run"
    if record.providers and provider not in record.providers:
        return f"variant {name} targets {', '.join(record.providers)}, not {provider}"
    return None


def meets(name: str, record: Variant, floors: dict[str, float]) -> str | None:
    """Why variant ``name`` misses the budget, or None when its recorded fidelity meets every floor."""
    if name == REFERENCE:
        return None
    for metric, floor in floors.items():
        value = record.metric(metric)
        if value is None:
            return f"{name} has no recorded {metric}"
        if value < floor:
            return f"{name} {metric} {value:.4f} < budget {floor}"
    return None


def choose(manifest: Manifest, provider: str, budget: float | dict[str, float] | None = None,
           broken: dict[str, str] | None = None, *, cpu: CpuInfo | None = None,
           measured: Mapping[str, float] | None = None, measured_how: str = "measured at load") -> Choice:
    """The fastest variant ``provider`` runs whose fidelity meets the budget; ProviderError when none does.
    ``broken``: variants that failed to open (name → why), passed over and named in the reason.

    On the CPU: by latency (ms) on ``cpu`` (default: this one) — ``measured`` when given, else as recorded
    in the manifest for a CPU of that kind — when every eligible variant has one; else by the fixed order."""
    floors = budget_floors(manifest.task, budget)
    eligible: list[str] = []
    rejected: list[Rejection] = [Rejection(n, f"{n} failed to open ({why})", budget=True)
                                 for n, why in (broken or {}).items()]
    for name, record in manifest.variants.items():
        if name in (broken or {}):
            continue
        cannot = supports(provider, name, record)
        misses = None if cannot else meets(name, record, floors)
        if cannot or misses:
            rejected.append(Rejection(name, cannot or misses or "", budget=misses is not None))
        else:
            eligible.append(name)
    if not eligible:
        raise ProviderError(f"no variant of this artifact suits {provider}: "
                            + "; ".join([r.reason for r in rejected] or ["none recorded"]))
    shown = ", ".join(f"{m} >= {f}" for m, f in floors.items())
    skipped = [r.reason for r in rejected if r.budget]
    passed = f"; passed over: {'; '.join(skipped)}" if skipped else ""
    cpu = cpu or this_cpu()
    times, how = (dict(measured), measured_how) if measured is not None else (recorded_ms(manifest, cpu),
                                                                               "recorded at quantize")
    if provider == "cpu" and len(eligible) > 1 and all(n in times for n in eligible):
        best = min(eligible, key=lambda n: (times[n], n))
        shown_ms = ", ".join(f"{n} {times[n]:.2f} ms" for n in sorted(eligible, key=lambda n: times[n]))
        reason = (f"fastest cpu variant meeting the budget ({shown}), by latency at batch 1 x 128 tokens {how} "
                  f"on {cpu.key}: {shown_ms}{passed}")
        return Choice(best, reason, tuple(eligible), measured=True)
    best = min(eligible, key=lambda n: _rank(provider, n, manifest.variants[n]))
    unmeasured = ("; not measured on this CPU (" + cpu.key + "): by precision order"
                  if provider == "cpu" and len(eligible) > 1 else "")
    return Choice(best, f"fastest {provider} variant meeting the budget ({shown}){unmeasured}{passed}",
                  tuple(eligible))


def recorded_ms(manifest: Manifest, cpu: CpuInfo) -> dict[str, float]:
    """Each variant's latency recorded on a CPU of ``cpu``'s kind (ms, batch 1 × 128 tokens)."""
    out = {}
    for name, record in manifest.variants.items():
        measured = record.latency_on(cpu)
        if measured is not None:
            out[name] = measured.ms
    return out


def check_explicit(manifest: Manifest, provider: str, name: str) -> Choice:
    """A variant the user named: it must exist and be one ``provider`` runs."""
    if name not in manifest.variants:
        raise ProviderError(f"variant {name!r} not in this artifact; available: {sorted(manifest.variants)}")
    generative = get_task(manifest.task).generative if manifest.task in TASKS else False
    why = supports(provider, name, manifest.variants[name], generative)
    if why:
        raise ProviderError(why)
    return Choice(name, "requested by the caller")


def _rank(provider: str, name: str, record: Variant) -> tuple[int, float, int, str]:
    order = _PRECISION_ORDER[provider]
    measured = (record.speed_cpu or {}).get("ratio") if provider == "cpu" else None
    speed = float(measured) if isinstance(measured, (int, float)) and not isinstance(measured, bool) else 1.0
    return (order.index(record.precision) if record.precision in order else len(order), speed,
            int(record.fused) if provider == "tensorrt" else int(not record.fused), name)
