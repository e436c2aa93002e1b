"""From what the user asked for to a recipe of the registry (recipes.RECIPES; its table is there).

``onnxformer quantize --precision P [--mode M] [--target T]`` picks an encoder recipe that changes the
precision; ``--precision`` alone picks the recipe marked ``default`` for P, and an omitted ``--mode``
is the one mode the target has (or the default recipe's). ``quantize-generative`` picks by name.
Everything here reads the registry when called: a registered recipe is selectable, nothing else to edit.
"""
from __future__ import annotations

from typing import Sequence

from onnxformer.artifact.manifest import REFERENCE
from onnxformer.errors import QuantizationError
from onnxformer.quantize import recipes
from onnxformer.quantize.recipe import Recipe


def quantizers() -> list[Recipe]:
    """The encoder recipes `onnxformer quantize` chooses from (fp32-opt is `optimize`'s: it keeps fp32)."""
    return [r for r in recipes.RECIPES if not r.generative and r.precision != REFERENCE]


def generative_names() -> tuple[str, ...]:
    return tuple(r.name for r in recipes.RECIPES if r.generative)


def plan(precision: str, mode: str | None = None, target: str | None = None) -> Recipe:
    """Resolve the user's choice to an encoder recipe, or say which combinations exist."""
    known = quantizers()
    precisions = tuple(dict.fromkeys(r.precision for r in known))
    modes = tuple(dict.fromkeys(r.mode for r in known if r.mode))
    targets = tuple(sorted({str(r.target) for r in known}))
    if precision not in precisions:
        raise QuantizationError(f"unknown precision {precision!r}; choose one of: {', '.join(precisions)}")
    if mode is not None and mode not in modes:
        raise QuantizationError(f"unknown mode {mode!r}; choose one of: {', '.join(modes)}")
    if target is not None and target not in targets:
        raise QuantizationError(f"unknown target {target!r}; choose one of: {', '.join(targets)}")
    same = [r for r in known if r.precision == precision]
    if mode is not None and not any(r.mode for r in same):
        with_modes = ", ".join(p for p in precisions if any(r.mode for r in known if r.precision == p))
        raise QuantizationError(f"--mode applies to {with_modes} only; drop it for {precision}")
    default = next(r for r in same if r.default)
    target = target or default.target
    if mode is None:
        on_target = [r for r in same if r.target == target]
        mode = on_target[0].mode if len(on_target) == 1 else default.mode
    found = [r for r in same if (r.mode, r.target) == (mode, target)]
    if not found:
        valid = "; ".join(f"{r.precision} {r.mode + ' ' if r.mode else ''}--target {r.target}" for r in known)
        raise QuantizationError(f"no {precision} {mode + ' ' if mode else ''}variant for --target {target}; valid: {valid}")
    return found[0]


def generative_recipes(names: Sequence[str]) -> list[Recipe]:
    """The generative recipes called ``names``, in that order (every unknown name in one error)."""
    by_name = {r.name: r for r in recipes.RECIPES if r.generative}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise QuantizationError(f"unknown generative variant(s) {unknown}; choose from {', '.join(by_name)}")
    return [by_name[n] for n in names]
