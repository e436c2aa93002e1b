"""INT8 graphs through ``onnxruntime.quantization`` (never optimum's wrapper).

- dynamic (``int8``, CPU): the fused fp32-opt graph, MatMul and the fused Attention quantized
  (MatMulInteger / QAttention), weights per-channel int8. ``DefaultTensorType`` tells the quantizer
  the type of contrib-op outputs that ONNX shape inference cannot see: without it, quantizing an
  ORT-fused graph fails with "Unable to find data type for weight_name" (what breaks optimum's
  quantizer on fused graphs with onnxruntime ≥ 1.32). ``reduce_range`` (7-bit weights) only on
  CPUs without VNNI, where 8-bit products can saturate the 16-bit intermediate sums.
- CPU graphs (dynamic and ``int8-static``): SkipLayerNormalization expanded after quantizing (unfuse.py).
- static QDQ (``int8-static`` on CPU, ``int8-trt`` for TensorRT): ranges from calibration texts
  (MinMax, Entropy or Percentile), computed once and cached so the budget loop re-quantizes
  without re-calibrating. The TensorRT flavour is symmetric int8 for activations and weights and
  starts from the unfused fp32 graph (TensorRT cannot run ORT's contrib operators).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from onnxformer.quantize.source import MODEL_FILE
from onnxformer.quantize.unfuse import expand_skip_layer_norms
from onnxformer.artifact.cpu import read_cpuinfo, this_cpu
from onnxformer.artifact.onnx_save import save_onnx

DYNAMIC_OPS = ("MatMul", "Attention")
STATIC_OPS = ("MatMul",)  # QDQ has no Attention handler; Gemm-free encoders only need MatMul


def has_vnni(cpuinfo: str | Path | None = None) -> bool:
    """True when the CPU has 8-bit dot-product instructions (unknown CPU: False, reduce_range is the safe choice).
    ``cpuinfo``: another description to read (tests); default this CPU, read once per process."""
    return (this_cpu() if cpuinfo is None else read_cpuinfo(cpuinfo)).vnni


@dataclass(frozen=True)
class Int8Settings:
    """Everything that decides an int8 graph except which nodes stay fp32 (the budget loop decides those)."""

    mode: str  # "dynamic" | "static"
    target: str  # "cpu" | "tensorrt"
    reduce_range: bool
    method: str | None = None  # calibration method (static only)

    @property
    def op_types(self) -> tuple[str, ...]:
        return DYNAMIC_OPS if self.mode == "dynamic" else STATIC_OPS

    @property
    def symmetric(self) -> bool:
        return self.target == "tensorrt"

    @property
    def tool(self) -> str:
        return f"onnxruntime.quantization.quantize_{self.mode}"

    def options(self) -> dict[str, Any]:
        """The options as recorded in the manifest."""
        opts: dict[str, Any] = {"mode": self.mode, "per_channel": True, "reduce_range": self.reduce_range,
                                "weight_type": "int8", "op_types": list(self.op_types)}
        if self.mode == "static":
            opts.update(format="QDQ", calibration=self.method, activation_type="int8" if self.symmetric else "uint8",
                        symmetric=self.symmetric)
        else:
            opts.update(activation_type="uint8 (dynamic, per tensor of each call: run one sequence per call)")
        if self.target == "cpu":
            opts["skip_layer_norm"] = "Add + LayerNormalization (unfuse.py: the faster CPU kernels)"
        return opts




def candidate_nodes(model: Path, op_types: Sequence[str]) -> list[str]:
    """Nodes the quantizer would convert: the given op types with a constant (initializer) weight."""
    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type in op_types and len(n.input) > 1 and n.input[1] in weights]


def quantize(source: Path, settings: Int8Settings, out_dir: Path, exclude: Sequence[str] = (),
             only: Sequence[str] | None = None, reader: CalibrationDataReader | None = None,
             cache: Path | None = None) -> Path:
    """Quantize ``source`` into ``out_dir/model.onnx``, keeping ``exclude`` in fp32 (or quantizing only ``only``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / MODEL_FILE
    common = dict(per_channel=True, reduce_range=settings.reduce_range, weight_type=QuantType.QInt8,
                  op_types_to_quantize=list(settings.op_types), nodes_to_exclude=list(exclude),
                  nodes_to_quantize=list(only) if only is not None else None)
    with quiet_root_logger():  # ORT logs "consider pre-processing" on the root logger for every call
        _run(source, out, settings, common, reader, cache)
    if settings.target == "cpu":
        model = onnx.load(str(out))
        if expand_skip_layer_norms(model):  # after quantizing: the int8 graph is the small one to rewrite
            save_onnx(model, out)
    return out


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _run(source: Path, out: Path, settings: Int8Settings, common: dict[str, Any],
         reader: CalibrationDataReader | None, cache: Path | None) -> None:
    if settings.mode == "dynamic":
        quantize_dynamic(str(source), str(out), **common,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})
        return
    from onnxformer.quantize.calibration import calibration_method

    quantize_static(
        str(source), str(out), reader, quant_format=QuantFormat.QDQ, **common,
        activation_type=QuantType.QInt8 if settings.symmetric else QuantType.QUInt8,
        calibrate_method=calibration_method(settings.method or "minmax"), calibration_cache_path=cache,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True,
                       "ActivationSymmetric": settings.symmetric, "WeightSymmetric": True},
    )
