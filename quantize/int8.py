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
- ``Selectable``: one session in which any set of a dynamic int8 graph's quantized nodes runs, for the budget
  loop's trials (budget.py), so that only the graph it keeps is quantized, saved and loaded.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterator, Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from onnxformer.artifact.cpu import read_cpuinfo, this_cpu
from onnxformer.artifact.onnx_save import save_onnx
from onnxformer.errors import QuantizationError
from onnxformer.quantize.source import MODEL_FILE
from onnxformer.quantize.unfuse import expand_skip_layer_norms

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


def expanded_source(source: Path, out: Path) -> Path:
    """``source`` with its SkipLayerNormalization nodes expanded (unfuse.py), written to ``out``; ``source`` itself
    when it has none. Expanding the source once, before quantizing, makes the graphs ``quantize`` writes differ from
    it only by the quantized nodes (what ``Selectable`` composes) and spares every trial its own rewrite."""
    model = onnx.load(str(source))
    if not expand_skip_layer_norms(model):
        return source
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_onnx(model, out)


GATE = "int8_gate__"  # the boolean input choosing one node's quantized output (Selectable)


class Selectable:
    """One session of a dynamic int8 graph in which every quantized node can be switched back to fp32: the fp32
    ``source`` and the nodes ``quantize`` made from it with every candidate quantized, side by side, each candidate's
    output chosen by a boolean input (``Where``). Any set of quantized nodes then runs without quantizing, saving or
    loading its graph; the budget loop ranks and screens its trials on it and builds only the graph it keeps.

    The composition takes ``quantize``'s nodes as they are (it never re-creates one): a node of the quantized graph
    that is not a node of the source is one the quantizer made. ORT's session may fuse a branch behind a ``Where``
    differently from the graph it stands for: the same model up to rounding (MiniLM, every node selected: the same
    min cosine to the last digit), checked on one text when opened (``check``); the graph kept is always built and
    measured for real."""

    def __init__(self, source: Path, quantized: Path, candidates: Sequence[str], out: Path,
                 threads: int | None = None):
        from onnxformer.runtime.session import create_session

        model, self.gates = _compose(onnx.load(str(source)), onnx.load(str(quantized)), candidates)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.path = save_onnx(model, out)
        self.session = create_session(self.path, threads=threads)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.runs = 0

    def run(self, quantized: Collection[str], feeds: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """The outputs on ``feeds`` of the graph with exactly ``quantized`` (of the candidates) quantized."""
        gates = {gate: np.array(node in quantized) for node, gate in self.gates.items()}
        self.runs += len(feeds)
        return [dict(zip(self.outputs, self.session.run(self.outputs, {**feed, **gates}))) for feed in feeds]

    def check(self, quantized: Path, feed: dict[str, np.ndarray], threads: int | None = None,
              tolerance: float = 1e-4) -> None:
        """Every node selected reproduces the quantized graph ``quantized`` on ``feed`` (1 − cosine ≤ ``tolerance``),
        or a QuantizationError: a wrong composition must not rank a budget's trials."""
        from onnxformer.runtime.session import create_session

        session = create_session(quantized, threads=threads)
        names = [o.name for o in session.get_outputs()]
        want = dict(zip(names, session.run(names, feed)))
        got = self.run(self.gates, [feed])[0]
        for name in names:
            a, b = got[name].ravel().astype(np.float64), want[name].ravel().astype(np.float64)
            error = 1.0 - float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
            if not error <= tolerance:
                raise QuantizationError(
                    f"the selectable int8 graph disagrees with {quantized} on {name} (1 - cosine {error:.2e}); "
                    "report this model, and quantize with --mode static or without a budget meanwhile"
                )


def _compose(source: onnx.ModelProto, quantized: onnx.ModelProto,
             candidates: Sequence[str]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """``source`` (edited in place) plus the quantizer's nodes of ``quantized``; each candidate whose outputs the
    quantizer's nodes make gets a gate. Returns the model and candidate → gate input name."""
    from onnxruntime.quantization.onnx_model import ONNXModel

    def key(n: onnx.NodeProto) -> tuple:
        return n.op_type, n.domain, tuple(n.input), tuple(n.output)

    original = {key(n) for n in source.graph.node}
    made = [n for n in quantized.graph.node if key(n) not in original]
    made_outputs = {o for n in made for o in n.output if o}
    by_name = {n.name: n for n in source.graph.node}
    gates: dict[str, str] = {}
    renamed: dict[str, str] = {}
    for i, name in enumerate(candidates):
        node = by_name[name]
        outs = [o for o in node.output if o]
        if not outs or not all(o in made_outputs for o in outs):
            continue  # the quantizer left it fp32: nothing to select
        gates[name] = f"{GATE}{i}"
        for j, o in enumerate(node.output):
            if o:
                renamed[o] = gates[name]
                node.output[j] = f"{o}__fp32"
    # A node the quantizer rewrote in every trial (not a candidate: a Gemm it turns into a quantized MatMul) is its
    # rewrite here too: its source node goes.
    replaced = [n for n in source.graph.node if n.name not in gates and any(o in made_outputs for o in n.output)]
    for n in replaced:
        source.graph.node.remove(n)
    wheres = [onnx.helper.make_node("Where", [renamed[o], f"{o}__int8", f"{o}__fp32"], [o], name=f"{o}__select")
              for o in renamed]
    for n in made:
        for j, o in enumerate(n.output):
            if o in renamed:
                n.output[j] = f"{o}__int8"
    _add_initializers(source, quantized)
    source.graph.node.extend(made + wheres)
    source.graph.input.extend(onnx.helper.make_tensor_value_info(g, onnx.TensorProto.BOOL, []) for g in gates.values())
    have = {o.domain: o for o in source.opset_import}
    for o in quantized.opset_import:
        if o.domain not in have:
            source.opset_import.append(o)
        elif have[o.domain].version < o.version:
            have[o.domain].version = o.version
    ONNXModel(source).topological_sort()
    return source, gates


def _add_initializers(source: onnx.ModelProto, quantized: onnx.ModelProto) -> None:
    known = {t.name: t for t in source.graph.initializer}
    for t in quantized.graph.initializer:
        if t.name not in known:
            source.graph.initializer.append(t)
        elif not np.array_equal(numpy_helper.to_array(t), numpy_helper.to_array(known[t.name])):
            raise QuantizationError(f"the int8 quantizer changed the fp32 initializer {t.name!r} in place; report this "
                                    "model, and quantize it with --mode static meanwhile")
