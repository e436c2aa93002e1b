"""Variant choice: per provider, the fastest variant whose recorded fidelity meets the accuracy budget.

Records come from the quantize stage (``precision``, ``providers``, ``fidelity``, ``graph``, optionally a
measured ``speed_cpu.ratio``); the chooser reads them defensively — a variant without a fidelity number for the
budget metric is never assumed good, except ``fp32`` itself, which is the reference.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from onnxformer.errors import ProviderError
from onnxformer.runtime.manifest import REFERENCE, Manifest, Variant
from onnxformer.runtime.providers import REGISTRY
from onnxformer.runtime.tasks import TASKS, get_task

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
        return {metric: default}
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
           broken: dict[str, str] | None = None) -> Choice:
    """The fastest variant ``provider`` runs whose fidelity meets the budget; ProviderError when none does.
    ``broken``: variants that failed to open (name → why), passed over and named in the reason."""
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
    best = min(eligible, key=lambda n: _rank(provider, n, manifest.variants[n]))
    shown = ", ".join(f"{m} >= {f}" for m, f in floors.items())
    skipped = [r.reason for r in rejected if r.budget]
    reason = (f"fastest {provider} variant meeting the budget ({shown})"
              + (f"; passed over: {'; '.join(skipped)}" if skipped else ""))
    return Choice(best, reason)


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
