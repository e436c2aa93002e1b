"""Which precision/mode/target combinations exist, what each variant is called, where it starts from.

| variant     | precision | mode    | target   | starts from | providers |
|-------------|-----------|---------|----------|-------------|-----------|
| fp32-opt    | fp32      | -       | cpu/cuda | fp32        | cuda, cpu |
| fp16        | fp16      | -       | cuda     | fp32-opt    | cuda      |
| fp16-trt    | fp16      | -       | tensorrt | fp32        | tensorrt  |
| int8        | int8      | dynamic | cpu      | fp32-opt    | cpu       |
| int8-static | int8      | static  | cpu      | fp32-opt    | cpu       |
| int8-trt    | int8      | static  | tensorrt | fp32        | tensorrt  |

TensorRT variants start from the unfused fp32 graph: TensorRT fuses on its own and cannot run ONNX
Runtime's contrib operators. FP16 on CPU and INT8 on CUDA (outside TensorRT) gain nothing in ONNX
Runtime, so those pairs are refused rather than silently produced.
"""
from __future__ import annotations

from dataclasses import dataclass

from onnxformer.errors import QuantizationError


@dataclass(frozen=True)
class Plan:
    name: str
    precision: str
    mode: str | None
    target: str
    source: str
    providers: tuple[str, ...]


_PLANS = {
    ("fp16", None, "cuda"): Plan("fp16", "fp16", None, "cuda", "fp32-opt", ("cuda",)),
    ("fp16", None, "tensorrt"): Plan("fp16-trt", "fp16", None, "tensorrt", "fp32", ("tensorrt",)),
    ("int8", "dynamic", "cpu"): Plan("int8", "int8", "dynamic", "cpu", "fp32-opt", ("cpu",)),
    ("int8", "static", "cpu"): Plan("int8-static", "int8", "static", "cpu", "fp32-opt", ("cpu",)),
    ("int8", "static", "tensorrt"): Plan("int8-trt", "int8", "static", "tensorrt", "fp32", ("tensorrt",)),
}
PRECISIONS = ("fp16", "int8")
MODES = ("dynamic", "static")
TARGETS = ("cpu", "cuda", "tensorrt")
_DEFAULT_TARGET = {"fp16": "cuda", "int8": "cpu"}


def plan(precision: str, mode: str | None = None, target: str | None = None) -> Plan:
    """Resolve the user's choice to a variant plan, or say which combinations exist."""
    if precision not in PRECISIONS:
        raise QuantizationError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if mode is not None and mode not in MODES:
        raise QuantizationError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    if target is not None and target not in TARGETS:
        raise QuantizationError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    if precision == "fp16" and mode is not None:
        raise QuantizationError("--mode applies to int8 only; drop it for fp16")
    target = target or _DEFAULT_TARGET[precision]
    if precision == "int8" and mode is None:
        mode = "static" if target == "tensorrt" else "dynamic"
    key = (precision, mode, target)
    if key not in _PLANS:
        valid = "; ".join(f"{p} {m + ' ' if m else ''}--target {t}" for p, m, t in _PLANS)
        raise QuantizationError(f"no {precision} {mode + ' ' if mode else ''}variant for --target {target}; valid: {valid}")
    return _PLANS[key]
