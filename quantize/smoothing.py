"""SmoothQuant for dynamic int8: move activation outliers into the weights before quantizing.

Dynamic int8 quantizes each MatMul input per tensor, so a few outlier channels set the scale and
crush every other channel to a handful of levels. For a node computing ``X @ W`` (X: (T, K),
W: (K, N)) and per input channel j, ``s_j = max|X_j|^α / max|W_j,:|^(1−α)`` gives
``(X / s) @ (s W) == X @ W`` in fp32, with flatter activations and barely rougher weights
(Xiao et al., 2023, https://arxiv.org/abs/2211.10438). Scales are taken relative to their median and
floored at 1, so only outlier channels shrink: on MiniLM, unclamped scales met the budget on the
evaluation texts but fell to min cosine 0.982 on long random-word texts; clamped, 0.994.

- α is chosen per node, measured not guessed: on the calibration texts, each candidate α (and
  "no smoothing") is scored by the node's simulated int8 output error, exactly as ORT quantizes
  dynamically (uint8 asymmetric per tensor for X, int8 symmetric per output channel for W).
- ``X / s`` costs nothing when X is an ``Attention`` / ``MultiHeadAttention`` output read only by this node:
  the division folds into V's weights and bias (softmax(QKᵀ)·V is linear in V's channels). Elsewhere it is one
  ``Mul`` before the node, added only when it cuts the node's error by ``min_gain``, since each
  ``Mul`` is one more pass over the activation.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxformer.artifact.manifest import Manifest
from onnxformer.artifact.onnx_save import save_onnx
from onnxformer.quantize.fidelity import evaluation_feeds
from onnxformer.quantize.int8 import Int8Settings, candidate_nodes
from onnxformer.quantize.unfuse import expand_skip_layer_norms
from onnxformer.runtime.session import create_session

ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MAX_ROWS = 2048  # token rows per node the α search simulates (sampled beyond it)
MIN_GAIN = 0.25  # a Mul must cut the node's simulated error by a quarter to pay for its extra pass
_SCALE_FLOOR = 1e-5

Feeds = dict[str, np.ndarray]


@dataclass
class Smoothing:
    """The smoothing chosen for one graph: per node, α and the per-channel scales (None = left alone)."""

    alphas: dict[str, float | None] = field(default_factory=dict)
    scales: dict[str, np.ndarray] = field(default_factory=dict)
    folded: list[str] = field(default_factory=list)  # divisions folded into an attention's V
    mul_nodes: int = 0  # Mul nodes added (one per group of nodes sharing an activation)
    error_before: dict[str, float] = field(default_factory=dict)
    error_after: dict[str, float] = field(default_factory=dict)

    def record(self, texts: int) -> dict[str, Any]:
        """What the manifest keeps: the method, where it applied and what it bought."""
        smoothed = sorted(self.scales)
        return {
            "method": "smoothquant, per-node alpha by simulated int8 error", "calibration_texts": texts,
            "smoothed_nodes": len(smoothed), "folded_into_attention": len(self.folded),
            "mul_nodes": self.mul_nodes,
            "alphas": {n: self.alphas[n] for n in smoothed},
            "node_error": {n: [round(self.error_before[n], 6), round(self.error_after[n], 6)] for n in smoothed},
        }


def smooth_for_int8(directory: Path, manifest: Manifest, source: Path, settings: Int8Settings,
                    texts: Sequence[str], out: Path) -> tuple[Path, Smoothing]:
    """SmoothQuant every node ``settings`` would quantize, from ``texts``; written to ``out`` (for the CPU with its
    SkipLayerNormalization expanded, as ``int8.expanded_source`` writes the unsmoothed graph)."""
    feeds = evaluation_feeds(directory, manifest, texts)
    nodes = candidate_nodes(source, settings.op_types)
    return smooth(source, nodes, feeds, out, settings.reduce_range, expand=settings.target == "cpu")


def smooth(source: Path, nodes: Sequence[str], feeds: Sequence[Feeds], out: Path, reduce_range: bool = False,
           min_gain: float = MIN_GAIN, expand: bool = False) -> tuple[Path, Smoothing]:
    """Write ``source`` with ``nodes`` smoothed to ``out``; return the path and the smoothing applied. ``expand``:
    also expand its SkipLayerNormalization nodes (unfuse.py) — after measuring the activations on ``source``."""
    model = onnx.load(str(source))
    graph = _Graph(model)
    targets = [graph.nodes[n] for n in nodes if n in graph.nodes and graph.smoothable(graph.nodes[n])]
    inputs = sorted({node.input[0] for node in targets})
    acts = _activations(model, inputs, feeds, out.parent)  # per text: input name → (real tokens, K)
    absmax = {name: np.max([np.abs(a[name]).max(axis=0) for a in acts], axis=0) for name in inputs}
    groups = _groups(targets)
    chosen = _choose(graph, groups, absmax, acts, reduce_range, min_gain)
    muls = {}
    for group in groups:
        if group[0].name in chosen.scales:
            mul = _apply(graph, group, chosen.scales[group[0].name], fold=group[0].name in chosen.folded)
            muls[group[0].name] = mul
    chosen.mul_nodes = sum(m is not None for m in muls.values())
    ordered = [m for n in model.graph.node for m in (muls.get(n.name), n) if m is not None]
    del model.graph.node[:]
    model.graph.node.extend(ordered)  # each Mul right before the first node it feeds: still topologically sorted
    if expand:
        expand_skip_layer_norms(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_onnx(model, out), chosen


def _groups(targets: Sequence[onnx.NodeProto]) -> list[list[onnx.NodeProto]]:
    """Nodes reading the same activation (Q, K and V projections), in graph order: smoothed with one scale vector,
    chosen on their weights side by side, so one ``Mul`` (and one dynamic quantization of it) serves them all."""
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in targets:
        groups.setdefault(node.input[0], []).append(node)
    return list(groups.values())


class _Graph:
    """Name lookups over one ModelProto (edited in place)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.nodes = {n.name: n for n in model.graph.node}
        self.inits = {i.name: i for i in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.uses: dict[str, int] = {}
        for n in model.graph.node:
            for name in n.input:
                self.uses[name] = self.uses.get(name, 0) + 1

    def weight(self, node: onnx.NodeProto) -> np.ndarray:
        return numpy_helper.to_array(self.inits[node.input[1]])

    def smoothable(self, node: onnx.NodeProto) -> bool:
        """A float activation times a 2-D weight that only this node reads (tied weights stay untouched)."""
        name = node.input[1] if len(node.input) > 1 else ""
        return (name in self.inits and self.uses.get(name) == 1 and len(self.inits[name].dims) == 2
                and self.inits[name].data_type == onnx.TensorProto.FLOAT)

    def foldable(self, node: onnx.NodeProto) -> bool:
        return self.value_weights(node) is not None

    def value_weights(self, node: onnx.NodeProto) -> tuple[str, str] | None:
        """(weight, bias) initializers whose last ``K`` columns make the V projection that X comes from, when X is
        an attention output only this node reads and those tensors are ours alone; None otherwise. Attention packs
        Q|K|V in one weight; MultiHeadAttention takes V from its own MatMul and Q|K|V biases in one tensor."""
        src = self.producer.get(node.input[0])
        if src is None or self.uses.get(node.input[0]) != 1 or len(src.input) < 3:
            return None
        if src.op_type == "Attention" and not any(a.name == "qkv_hidden_sizes" for a in src.attribute):
            weight, bias = src.input[1], src.input[2]
        elif src.op_type == "MultiHeadAttention" and len(src.input) > 3 and src.input[3]:
            value = self.producer.get(src.input[2])
            if value is None or value.op_type != "MatMul" or self.uses.get(src.input[2]) != 1:
                return None
            weight, bias = value.input[1], src.input[3]
        else:
            return None
        # The bias may be shared (the exporter dedups equal constants: zero biases of a fresh model) — _apply
        # copies it; the weight must be this V's alone.
        ours = weight in self.inits and self.uses.get(weight) == 1 and bias in self.inits
        return (weight, bias) if ours else None


def _probe(model: onnx.ModelProto, inputs: Sequence[str], work: Path) -> Any:
    """A session that also returns the given intermediate tensors."""
    probe = copy.deepcopy(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in inputs if name not in known)
    work.mkdir(parents=True, exist_ok=True)
    return create_session(save_onnx(probe, work / "smoothing-probe.onnx"))


def _activations(model: onnx.ModelProto, inputs: Sequence[str], feeds: Sequence[Feeds],
                 work: Path) -> list[dict[str, np.ndarray]]:
    """The fp32 values of ``inputs`` on each feed, real tokens only."""
    session = _probe(model, inputs, work)
    names = [o.name for o in session.get_outputs()]
    acts = []
    for feed in feeds:
        outs = dict(zip(names, session.run(None, feed)))
        mask = feed["attention_mask"].reshape(-1).astype(bool) if "attention_mask" in feed else None
        acts.append({name: _rows(outs[name], mask) for name in inputs})
    return acts


def _rows(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(B, T, K) → (real tokens, K): padded positions never set a range."""
    flat = x.reshape(-1, x.shape[-1])
    return flat[mask] if mask is not None and mask.size == flat.shape[0] else flat


def scales_for(absmax: np.ndarray, weight: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's per-input-channel scales ``max|X_j|^α / max|W_j|^(1−α)``, relative to their median, ≥ 1."""
    a = np.maximum(absmax, _SCALE_FLOOR)
    w = np.maximum(np.abs(weight).max(axis=1), _SCALE_FLOOR)
    s = a ** alpha / w ** (1.0 - alpha)
    # Divide only the channels above the typical one: a channel that was quiet in calibration is never
    # amplified, so an input that wakes it (long or unusual text) cannot become a new outlier.
    return np.maximum(s / np.median(s), 1.0).astype(np.float32)


def int8_error(x: np.ndarray, weight: np.ndarray, x_levels: int = 255, w_levels: int = 127) -> float:
    """Relative error of ``x @ weight`` as ORT's dynamic int8 computes it (x: (T, K), weight: (K, N)).

    x: asymmetric per tensor over ``x_levels``; weight: symmetric per output channel, ±``w_levels``.
    """
    xq, wq = _fake_quant_x(x, x_levels), _fake_quant_w(weight, w_levels)
    exact = x @ weight
    return float(np.sum((xq @ wq - exact) ** 2) / max(float(np.sum(exact ** 2)), 1e-30))


def _choose(graph: _Graph, groups: Sequence[Sequence[onnx.NodeProto]], absmax: dict[str, np.ndarray],
            acts: list[dict[str, np.ndarray]], reduce_range: bool, min_gain: float) -> Smoothing:
    chosen = Smoothing()
    for group in groups:
        first = group[0]
        weight = np.concatenate([graph.weight(n) for n in group], axis=1)  # (K, ΣN): one scale for the group
        xs = [a[first.input[0]] for a in acts]
        sim = _Simulation(xs, weight, *_levels(first, reduce_range))
        base = sim.error(None)
        best_alpha, best = None, base
        for alpha in ALPHAS:
            err = sim.error(scales_for(absmax[first.input[0]], weight, alpha))
            if err < best:
                best_alpha, best = alpha, err
        fold = len(group) == 1 and graph.foldable(first)
        for node in group:
            chosen.error_before[node.name], chosen.alphas[node.name] = base, None
        if best_alpha is not None and (fold or best <= (1.0 - min_gain) * base):
            scales = scales_for(absmax[first.input[0]], weight, best_alpha)
            for node in group:
                chosen.alphas[node.name], chosen.error_after[node.name] = best_alpha, best
                chosen.scales[node.name] = scales
            if fold:
                chosen.folded.append(first.name)
    return chosen


class _Simulation:
    """``int8_error`` averaged over texts, batched: each text's activations are quantized with their own range
    (one sequence per call, as the runtime runs dynamic int8), then every text's rows go through one matmul per
    candidate — one large GEMM instead of one small one per text, and the exact product computed once.
    Rows beyond ``MAX_ROWS`` are sampled (the same rows for every candidate) to bound the work on large models."""

    def __init__(self, xs: Sequence[np.ndarray], weight: np.ndarray, x_levels: int, w_levels: int):
        self.xs, self.weight, self.x_levels, self.w_levels = list(xs), weight, x_levels, w_levels
        sizes = np.array([len(x) for x in self.xs])
        total = int(sizes.sum())
        rows = np.arange(total) if total <= MAX_ROWS else np.sort(
            np.random.default_rng(0).choice(total, MAX_ROWS, replace=False))
        self.rows, self.text = rows, np.repeat(np.arange(len(self.xs)), sizes)[rows]
        self.exact = np.concatenate(self.xs)[rows] @ weight
        self.ref = np.bincount(self.text, (self.exact.astype(np.float64) ** 2).sum(axis=1), minlength=len(self.xs))

    def error(self, s: np.ndarray | None) -> float:
        xq = np.concatenate([_fake_quant_x(x if s is None else x / s, self.x_levels) for x in self.xs])[self.rows]
        wq = _fake_quant_w(self.weight if s is None else self.weight * s[:, None], self.w_levels)
        diff = ((xq @ wq - self.exact).astype(np.float64) ** 2).sum(axis=1)
        err = np.bincount(self.text, diff, minlength=len(self.xs))
        present = np.bincount(self.text, minlength=len(self.xs)) > 0
        return float(np.mean(err[present] / np.maximum(self.ref[present], 1e-30)))


def _fake_quant_x(x: np.ndarray, levels: int) -> np.ndarray:
    """x as ORT's dynamic quantization sees it: asymmetric over ``levels``, one range for the whole call. In x's own
    dtype (a float64 zero point made every simulated product float64: 2-3x the time, the same α on MiniLM)."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    sx = (hi - lo) / levels or 1.0
    zp = float(np.clip(np.round(-lo / sx), 0, levels))
    return (np.clip(np.round(x / sx) + zp, 0, levels) - zp) * sx


def _fake_quant_w(weight: np.ndarray, levels: int) -> np.ndarray:
    """The weight symmetric per output channel over ±``levels``."""
    sw = np.abs(weight).max(axis=0) / levels
    sw[sw == 0] = 1.0
    return np.clip(np.round(weight / sw), -levels, levels) * sw


def _levels(node: onnx.NodeProto, reduce_range: bool) -> tuple[int, int]:
    """(activation, weight) levels ORT's quantize_dynamic uses (read from the graphs it writes, ORT 1.32):
    activations always uint8 over 255 levels (DynamicQuantizeLinear, and QAttention's ReduceMin/Max over 255);
    weights symmetric int8 over ±127, or ±64 with reduce_range — MatMul and Attention alike."""
    return 255, (64 if reduce_range else 127)


def _apply(graph: _Graph, group: Sequence[onnx.NodeProto], s: np.ndarray, fold: bool) -> onnx.NodeProto | None:
    """Scale each W's rows by s and divide X by s: in the attention's V when folded, else with one Mul (returned)
    that every node of the group reads."""
    for node in group:
        _set(graph, node.input[1], graph.weight(node) * s[:, None])
    first = group[0]
    if fold:  # V's output channels (the last ``hidden`` of the weight and bias) divided by s
        weight, bias = graph.value_weights(first)  # type: ignore[misc]  # fold is only set when foldable
        w, b = numpy_helper.to_array(graph.inits[weight]).copy(), numpy_helper.to_array(graph.inits[bias]).copy()
        hidden = s.shape[0]
        w[:, -hidden:] /= s
        b[-hidden:] /= s
        _set(graph, weight, w)
        if graph.uses.get(bias, 0) > 1:  # shared: this attention gets its own copy
            attention = graph.producer[first.input[0]]
            own = f"{bias}_for_{attention.name}"
            graph.model.graph.initializer.append(numpy_helper.from_array(b.astype(np.float32), own))
            graph.inits[own], graph.uses[bias] = graph.model.graph.initializer[-1], graph.uses[bias] - 1
            graph.uses[own] = 1
            attention.input[list(attention.input).index(bias)] = own
        else:
            _set(graph, bias, b)
        return None
    inverse = f"{first.name}_smooth_inv"
    graph.model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inverse))
    smoothed = f"{first.input[0]}_smoothed_for_{first.name}"
    mul = helper.make_node("Mul", [first.input[0], inverse], [smoothed], name=f"{first.name}_smooth")
    for node in group:
        node.input[0] = smoothed
    return mul


def _set(graph: _Graph, name: str, value: np.ndarray) -> None:
    graph.inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

