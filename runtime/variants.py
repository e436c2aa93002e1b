"""Variant choice: per provider, the fastest variant whose recorded fidelity meets the accuracy budget.

Records come from the quantize stage (``precision``, ``providers``, ``fidelity``, optionally a measured
``speed_cpu.ratio``); the chooser reads them defensively — a variant without a fidelity number for the
budget metric is never assumed good, except ``fp32`` itself, which is the reference.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from onnxformer.errors import ProviderError
from onnxformer.runtime.providers import REGISTRY

log = logging.getLogger("onnxformer.runtime")

# task → (fidelity metric the budget applies to, default floor). The one table: quantize's budgets use it too.
BUDGET_METRICS: dict[str, tuple[str, float]] = {
    "feature-extraction": ("min_cosine", 0.99),
    "text-classification": ("argmax_agreement", 0.95),
    "token-classification": ("token_agreement", 0.95),
    "question-answering": ("span_agreement", 0.9),
}
REFERENCE = "fp32"
# Expected speed per provider, fastest precision first. Within a precision: a measured CPU latency ratio when the
# quantize stage recorded one, then fused graphs first (last for TensorRT, which fuses itself and cannot run
# ONNX Runtime's contrib ops).
_PRECISION_ORDER: dict[str, tuple[str, ...]] = {"tensorrt": ("int8", "fp16", "fp32"), "cuda": ("fp16", "fp32"),
                                                 "cpu": ("int8", "fp32")}

@dataclass(frozen=True)
class Choice:
    variant: str
    reason: str


def budget_floors(task: str, budget: float | dict[str, float] | None) -> dict[str, float]:
    """``None`` → the task's default floor; a number → that floor on the task's metric; a dict → as given."""
    metric, default = BUDGET_METRICS.get(task, ("min_cosine", 0.99))
    if budget is None:
        return {metric: default}
    if isinstance(budget, dict):
        return {str(k): float(v) for k, v in budget.items()}
    if isinstance(budget, (int, float)) and not isinstance(budget, bool) and 0.0 < budget <= 1.0:
        return {metric: float(budget)}
    raise ProviderError(f"budget {budget!r} is not a fidelity floor in (0, 1] (e.g. 0.99) or a {{metric: floor}} dict")


def supports(provider: str, name: str, record: dict[str, Any]) -> str | None:
    """Why ``provider`` cannot run variant ``name``, or None when it can."""
    precision = str(record.get("precision", ""))
    if precision not in REGISTRY[provider].precisions:
        return f"variant {name} is {precision or 'of unknown precision'}, which {provider} does not run"
    targets = record.get("providers")
    if isinstance(targets, list) and targets and provider not in targets:
        return f"variant {name} targets {', '.join(map(str, targets))}, not {provider}"
    return None


def meets(name: str, record: dict[str, Any], floors: dict[str, float]) -> str | None:
    """Why variant ``name`` misses the budget, or None when its recorded fidelity meets every floor."""
    if name == REFERENCE:
        return None
    fidelity = record.get("fidelity") if isinstance(record.get("fidelity"), dict) else {}
    for metric, floor in floors.items():
        value = fidelity.get(metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{name} has no recorded {metric}"
        if value < floor:
            return f"{name} {metric} {value:.4f} < budget {floor}"
    return None


def choose(manifest: dict[str, Any], provider: str, budget: float | dict[str, float] | None = None) -> Choice:
    """The fastest variant ``provider`` runs whose fidelity meets the budget; ProviderError when none does."""
    floors = budget_floors(manifest["task"], budget)
    variants = manifest.get("variants") or {}
    eligible, rejected = [], []
    for name, record in variants.items():
        if not isinstance(record, dict):
            continue
        why = supports(provider, name, record) or meets(name, record, floors)
        (rejected if why else eligible).append(why or name)
    if not eligible:
        raise ProviderError(f"no variant of this artifact suits {provider}: " + "; ".join(rejected or ["none recorded"]))
    best = min(eligible, key=lambda n: _rank(provider, n, variants[n]))
    shown = ", ".join(f"{m} >= {f}" for m, f in floors.items())
    skipped = [r for r in rejected if "budget" in r or "no recorded" in r]
    reason = (f"fastest {provider} variant meeting the budget ({shown})"
              + (f"; passed over: {'; '.join(skipped)}" if skipped else ""))
    return Choice(best, reason)


def check_explicit(manifest: dict[str, Any], provider: str, name: str) -> Choice:
    """A variant the user named: it must exist and be one ``provider`` runs."""
    variants = manifest.get("variants") or {}
    if name not in variants:
        raise ProviderError(f"variant {name!r} not in this artifact; available: {sorted(variants)}")
    why = supports(provider, name, variants[name])
    if why:
        raise ProviderError(why)
    return Choice(name, "requested by the caller")


def _rank(provider: str, name: str, record: dict[str, Any]) -> tuple[int, float, int, str]:
    order = _PRECISION_ORDER[provider]
    precision = str(record.get("precision"))
    measured = (record.get("speed_cpu") or {}).get("ratio") if provider == "cpu" else None
    speed = float(measured) if isinstance(measured, (int, float)) and not isinstance(measured, bool) else 1.0
    made_by = record.get("made_by") if isinstance(record.get("made_by"), dict) else {}
    fused = name.endswith("-opt") or "fused_ops" in made_by or made_by.get("from") == "fp32-opt"
    return (order.index(precision) if precision in order else len(order), speed,
            int(fused) if provider == "tensorrt" else int(not fused), name)
