"""Every recipe (one small class each) and ``RECIPES``, the one registry of them.

| variant     | precision | mode    | target   | starts from | providers | for        |
|-------------|-----------|---------|----------|-------------|-----------|------------|
| fp32-opt    | fp32      | -       | -        | fp32        | cuda, cpu | encoders   |
| fp16        | fp16      | -       | cuda     | fp32-opt    | cuda      | encoders   |
| fp16-trt    | fp16      | -       | tensorrt | fp32        | tensorrt  | encoders   |
| int8        | int8      | dynamic | cpu      | fp32-opt    | cpu       | encoders   |
| int8-static | int8      | static  | cpu      | fp32-opt    | cpu       | encoders   |
| int8-trt    | int8      | static  | tensorrt | fp32        | tensorrt  | encoders   |
| fp16        | fp16      | -       | cuda     | fp32        | cuda, cpu | generative |
| int8        | int8      | dynamic | cpu      | fp32        | cpu       | generative |
| int4        | int4      | -       | cpu      | fp32        | cpu       | generative |

TensorRT variants start from the unfused fp32 graph: TensorRT fuses on its own and cannot run ONNX
Runtime's contrib operators. FP16 on CPU and INT8 on CUDA (outside TensorRT) gain nothing in ONNX
Runtime, so those pairs do not exist (``plan.plan`` refuses them). Generative variants convert
every graph of the model with ONNX Runtime's own tooling and are measured teacher-forced
(``generative.Reference``); they are not held to a budget.

Adding a recipe: one class below (its attributes and ``build``) and its entry in ``RECIPES``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from onnxformer.artifact.manifest import PER_CALL, STATIC_SCALES
from onnxformer.artifact.onnx_save import save_onnx
from onnxformer.artifact.roles import DECODER, DECODER_WITH_PAST, MODEL
from onnxformer.errors import QuantizationError
from onnxformer.quantize import fp16, int8, optimize
from onnxformer.quantize.budget import meet_budget
from onnxformer.quantize.calibration import calibration_method, text_reader
from onnxformer.quantize.fidelity import budget_metric
from onnxformer.quantize.int8 import Selectable
from onnxformer.quantize.recipe import Built, Options, Recipe, RecipeJob
from onnxformer.quantize.shapes import annotate
from onnxformer.quantize.smoothing import smooth_for_int8
from onnxformer.quantize.source import MODEL_FILE

# fp32-opt must reproduce fp32 to this fidelity on every task metric (fusions are exact up to fp32 rounding).
FUSION_FLOOR = 0.999
# Dynamic int8 skips smoothing when quantizing every node plainly already reaches this on the budget metric.
PLAIN_ENOUGH = 0.999


# --- encoders ------------------------------------------------------------------------------------------
class EncoderRecipe(Recipe):
    """A variant of an encoder artifact, measured on the evaluation texts and held to the task's budget."""

    def check(self, options: Options) -> None:
        _smoothing_is_dynamic_only(options)
        _method_is_static_only(options)

    def accept(self, job: RecipeJob, built: Built) -> None:
        score = job.evaluation.score(built.fidelity)
        if job.floor is not None and score < job.floor:
            raise QuantizationError(
                f"{self.name} reaches {budget_metric(job.manifest.task)} {score:.4f} < budget {job.floor}; "
                "use fp32-opt for this model or lower --budget"
            )


class FusedFp32(EncoderRecipe):
    """ONNX Runtime's transformer fusions (``onnxformer optimize``; also made on the way to a variant of it)."""

    name, precision = "fp32-opt", "fp32"
    providers, fuses = ("cuda", "cpu"), True

    def build(self, job: RecipeJob) -> Built:
        job.progress("fusing (onnxscript rewriter + onnxruntime.transformers.optimizer)")
        path, made_by = optimize.fuse(job.source, job.manifest.architecture, job.work / "fused")
        return self.built(job, {MODEL: path}, made_by)

    def accept(self, job: RecipeJob, built: Built) -> None:
        score = job.evaluation.score(built.fidelity)
        if score < FUSION_FLOOR:
            raise QuantizationError(
                f"the fused graph disagrees with fp32 ({budget_metric(job.manifest.task)} {score:.4f} < "
                f"{FUSION_FLOOR}); report this model — use the fp32 variant meanwhile"
            )


class Fp16(EncoderRecipe):
    """Guarded float16 (fp16.py): nodes whose activations would overflow stay fp32."""

    name, precision, target = "fp16", "fp16", "cuda"
    source, providers, default = "fp32-opt", ("cuda",), True

    def build(self, job: RecipeJob) -> Built:
        job.progress(f"{self.name}: measuring activation ranges on guard inputs")
        feeds = fp16.guard_feeds(job.directory, job.manifest, job.calibration)
        path, made_by = fp16.convert(job.source, feeds, job.work / "fp16", job.work)
        return self.built(job, {MODEL: path}, made_by)


class Fp16TensorRT(Fp16):
    """Guarded float16 of the unfused graph, for TensorRT."""

    name, target = "fp16-trt", "tensorrt"
    source, providers, default = "fp32", ("tensorrt",), False


class Int8Dynamic(EncoderRecipe):
    """Dynamic int8 (int8.py), SmoothQuant first unless --no-smooth; the budget loop keeps nodes fp32."""

    name, precision, mode, target = "int8", "int8", "dynamic", "cpu"
    source, providers, default = "fp32-opt", ("cpu",), True

    def check(self, options: Options) -> None:
        if options.calibration is not None and not options.smooth:
            raise QuantizationError(
                "--calibration feeds static int8 (ranges), fp16 (guard inputs) and smoothing; dynamic int8 without "
                "smoothing measures its ranges at run time: drop --no-smooth or --calibration"
            )
        _method_is_static_only(options)

    def settings(self, options: Options, vnni: bool) -> int8.Int8Settings:
        method = (options.method or "minmax") if self.mode == "static" else None
        return int8.Int8Settings(str(self.mode), str(self.target), reduce_range=not vnni, method=method)

    def inputs(self, job: RecipeJob, settings: int8.Int8Settings) -> Prepared:
        """The graph to quantize, what preparing it recorded, and what it already built (the plain int8 graph)."""
        source = int8.expanded_source(job.source, job.work / "expanded" / MODEL_FILE)  # once, not once per trial
        if not job.options.smooth:
            return Prepared(source)
        plain = self.fully_quantized(job, settings, source)
        score = job.evaluation.score(plain[1])
        if score >= max(float(job.floor or 0.0), PLAIN_ENOUGH):
            # smoothing costs most of a large model's build and cannot buy more than rounding
            metric = budget_metric(job.manifest.task)
            job.progress(f"{self.name}: plain int8 reaches {metric} {score:.4f}; smoothing skipped")
            skipped = {"method": "skipped", "reason": f"plain int8 reaches {metric} {score:.5f} >= {PLAIN_ENOUGH}"}
            return Prepared(source, {"smoothing": skipped}, first=plain)
        texts = job.calibration
        job.progress(f"{self.name}: smoothing activation outliers into the weights ({len(texts)} calibration texts)")
        path, smoothing = smooth_for_int8(job.directory, job.manifest, job.source, settings, texts,
                                          job.work / "smoothed" / MODEL_FILE)
        record = smoothing.record(len(texts))
        smoothed = self.fully_quantized(job, settings, path, job.work / "all-smoothed")  # the budget loop's first trial
        # Smoothing lowers each node's simulated error on average over texts; the budget is the worst text end to
        # end, which it can still lower (seen with reduce_range's 7-bit weights): keep whichever measures better.
        smoothed_score = job.evaluation.score(smoothed[1])
        if smoothed_score < score:
            metric = budget_metric(job.manifest.task)
            job.progress(f"{self.name}: smoothed int8 {metric} {smoothed_score:.4f} < plain {score:.4f}; not smoothing")
            rejected = {"method": "rejected", "reason": f"measured {metric} {smoothed_score:.5f} smoothed < "
                        f"{score:.5f} plain", "tried": record}
            return Prepared(source, {"smoothing": rejected}, first=plain)
        return Prepared(path, {"smoothing": record}, first=smoothed)

    def fully_quantized(self, job: RecipeJob, settings: int8.Int8Settings, source: Path,
                        out: Path | None = None) -> tuple[Path, dict[str, Any]]:
        """Every candidate node of ``source`` quantized, and its measured fidelity."""
        job.progress(f"{self.name}: quantizing every node ({settings.mode})")
        path = int8.quantize(source, settings, out or job.work / "all")
        return path, job.evaluation.measure(path)

    def trials(self, job: RecipeJob, source: Path, candidates: Sequence[str]) -> Callable[[Path], Selectable] | None:
        """Opens the budget loop's stand-in for its trial graphs, from the fully quantized graph (dynamic only:
        ``Selectable`` composes ``quantize_dynamic``'s nodes; static QDQ graphs build every trial)."""
        if self.mode != "dynamic":
            return None

        def selectable(quantized: Path) -> Selectable:
            job.progress(f"{self.name}: one session for every trial (each quantized node selectable)")
            threads = job.evaluation.threads
            trials = Selectable(source, quantized, candidates, job.work / "selectable" / MODEL_FILE, threads)
            trials.check(quantized, max(job.evaluation.feeds, key=lambda f: sum(v.size for v in f.values())), threads)
            return trials

        return selectable

    def build(self, job: RecipeJob) -> Built:
        vnni = int8.has_vnni()
        settings = self.settings(job.options, vnni)
        prepared = self.inputs(job, settings)

        def quantized(exclude: Sequence[str], only: Sequence[str] | None, out: Path) -> Path:
            return int8.quantize(prepared.source, settings, out, exclude, only, prepared.reader, prepared.cache)

        if prepared.first is None:
            job.progress(f"{self.name}: quantizing ({settings.mode})")
        candidates = int8.candidate_nodes(prepared.source, settings.op_types)
        if job.floor is None or job.reference is None:
            raise QuantizationError(f"{self.name}: an encoder's int8 is held to a budget against the fp32 reference; "
                                    "this job has none (a bug: quantize_artifact always sets both)")
        floor = float(job.floor)
        result = meet_budget(quantized, candidates, job.evaluation, floor, job.work, self.name, job.reference,
                             job.progress, first=prepared.first, trials=self.trials(job, prepared.source, candidates))
        made_by = {"tool": settings.tool, **settings.options(), "cpu_vnni": vnni,
                   "budget": result.record(floor, budget_metric(job.manifest.task))}
        if prepared.reader is not None:
            made_by["calibration_texts"] = len(job.calibration)
        # Its latency on this CPU is recorded once published (speed.record_latencies: every CPU variant side by side).
        scales = PER_CALL if self.mode == "dynamic" else STATIC_SCALES  # PER_CALL: run one sequence per call
        return self.built(job, {MODEL: result.path}, {**made_by, **prepared.made_by}, fidelity=result.fidelity,
                          activation_scales=scales)

    def measure(self, job: RecipeJob, built: Built) -> dict[str, Any]:
        return built.fidelity  # measured by the budget loop, on this very graph


class Int8Static(Int8Dynamic):
    """Calibrated static QDQ int8: ranges from the calibration texts (MinMax, Entropy or Percentile)."""

    name, mode = "int8-static", "static"
    default = False

    def check(self, options: Options) -> None:
        _smoothing_is_dynamic_only(options)
        if options.method is not None:
            calibration_method(options.method)

    def inputs(self, job: RecipeJob, settings: int8.Int8Settings) -> Prepared:
        typed = annotate(job.source, job.work / "typed" / MODEL_FILE)  # contrib-op tensors need types to be calibrated
        return Prepared(typed, reader=text_reader(job.directory, job.manifest, job.calibration),
                        cache=job.work / "calibration.json")


class Int8TensorRT(Int8Static):
    """Symmetric static QDQ int8 from the unfused graph, for TensorRT."""

    name, target = "int8-trt", "tensorrt"
    source, providers = "fp32", ("tensorrt",)


@dataclass
class Prepared:
    """What an int8 recipe quantizes: the source graph (smoothed or typed), what preparing it recorded, the
    calibration reader and its cache (static), and a graph already built with every node quantized (its path and
    measured fidelity), which the budget loop takes as its first trial instead of building it again."""

    source: Path
    made_by: dict[str, Any] = field(default_factory=dict)
    reader: Any = None
    cache: Path | None = None
    first: tuple[Path, dict[str, Any]] | None = None


def _smoothing_is_dynamic_only(options: Options) -> None:
    if not options.smooth:
        raise QuantizationError("--no-smooth applies to dynamic int8 only; drop it")


def _method_is_static_only(options: Options) -> None:
    if options.method is not None:
        raise QuantizationError("--method chooses the calibration of static int8; add --mode static or drop it")


# --- generative ----------------------------------------------------------------------------------------
class GenerativeRecipe(Recipe):
    """A variant of a generative artifact: every graph (decoder, or encoder + both seq2seq decoders) converted
    by ``convert``, measured teacher-forced against fp32."""

    generative = True

    def convert(self, source: Path, out: Path, options: Options) -> dict[str, Any]:
        """Write the converted ``source`` graph to ``out``; return how it was made."""
        raise NotImplementedError

    activation_scales: str | None = None  # PER_CALL: a row's output depends on the rows batched with it

    def build(self, job: RecipeJob) -> Built:
        out = job.work / self.name
        out.mkdir()
        graphs = {role: out / source.name for role, source in job.sources.items()}
        made_by: dict[str, Any] = {}
        for role, source in job.sources.items():
            made_by = self.convert(source, graphs[role], job.options)
        return self.built(job, graphs, made_by, main=DECODER, cache_dtype=cache_dtype(graphs),
                          activation_scales=self.activation_scales)

    def measure(self, job: RecipeJob, built: Built) -> dict[str, Any]:
        return job.evaluation.measure(built.graphs)


class GenerativeFp16(GenerativeRecipe):
    """ORT's float16 converter; inputs and outputs become fp16 too, so the KV cache is half the size."""

    name, precision, target = "fp16", "fp16", "cuda"
    providers = ("cuda", "cpu")  # fp16 decoders also run on the CPU

    def convert(self, source: Path, out: Path, options: Options) -> dict[str, Any]:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = fold_weight_transposes(onnx.load(str(source)))
        kept = fp16.index_math_nodes(model)
        save_onnx(convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=False,
                                           node_block_list=kept), out)
        return {"tool": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": False,
                "fp32": "integer index math"}


class GenerativeInt8(GenerativeRecipe):
    """Dynamic int8: weights int8 per tensor, activations quantized on the fly (MatMulInteger)."""

    name, precision, mode, target = "int8", "int8", "dynamic", "cpu"
    providers = ("cpu",)
    # DynamicQuantizeLinear takes one scale over the whole activation tensor, every row of a batch included (ORT's
    # MatMulInteger takes no per-row zero point), so a continuously batched row's tokens depend on its batch-mates.
    activation_scales = PER_CALL

    def convert(self, source: Path, out: Path, options: Options) -> dict[str, Any]:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}  # types of ops shape inference cannot see
        with int8.quiet_root_logger():
            quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"], extra_options=extra)
        return {"tool": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8", "ops": ["MatMul", "Gemm"]}


class GenerativeInt4(GenerativeRecipe):
    """Weight-only 4-bit: MatMul weights → MatMulNBits, symmetric, one scale per ``block_size`` weights."""

    name, precision, target = "int4", "int4", "cpu"
    providers = ("cpu",)

    def check(self, options: Options) -> None:
        size = options.block_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 16 or size & (size - 1):
            raise QuantizationError(f"--block-size must be a power of two >= 16 (MatMulNBits), got {size!r}")

    def convert(self, source: Path, out: Path, options: Options) -> dict[str, Any]:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(constant_matmul_weights(onnx.load(str(source))), bits=4,
                                         block_size=options.block_size, is_symmetric=True, accuracy_level=4)
        quantizer.process()
        if not any(n.op_type == "MatMulNBits" for n in quantizer.model.model.graph.node):
            raise QuantizationError(f"{source.name}: no MatMul weight could be quantized to 4 bits "
                                    f"(block size {options.block_size} must divide the input dimension)")
        save_onnx(quantizer.model.model, out)
        return {"tool": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer", "bits": 4,
                "block_size": options.block_size, "symmetric": True, "accuracy_level": 4}


def fold_weight_transposes(model: Any) -> Any:
    """``model`` with a tied head's Transpose of the embedding folded into a MatMul weight of its own (onnxscript's
    folder leaves it: the embedding has a second user, the Gather). MatMulNBits only takes constant weights, and
    ORT 1.32's CPU session crashes (NchwcTransformer) on the fp16 graph that keeps the Transpose."""
    from onnxscript.optimizer import fold_constants

    weights = {i for n in model.graph.node if n.op_type == "MatMul" for i in n.input[1:2]}
    fold_constants(model, output_size_limit=2**62,
                   should_fold=lambda node: True if node.op_type == "Transpose"
                   and any(o.name in weights for o in node.outputs) else None)
    return model


def constant_matmul_weights(model: Any) -> Any:
    """``model`` with every linear layer a MatMul of a constant weight, the form MatMulNBits takes: Gemm (the
    dynamo graph of GPT-2's Conv1D) becomes MatMul + Add (ORT's own rewrite) and tied heads get their own weight."""
    from onnxruntime.quantization.onnx_model import ONNXModel

    ONNXModel(model).replace_gemm_with_matmul()
    return fold_weight_transposes(model)


def cache_dtype(graphs: dict[str, Path]) -> str:
    """The KV cache's dtype, read from the past inputs of the graph that takes them."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = graphs.get(DECODER_WITH_PAST, graphs[DECODER])
    inputs = onnx.load(str(graph), load_external_data=False).graph.input
    past = next(i for i in inputs if i.name.startswith("past_key_values."))
    return str(tensor_dtype_to_np_dtype(past.type.tensor_type.elem_type))


# The registry: every recipe, once. Encoder variants are chosen from it by (precision, mode, target)
# (plan.plan); generative ones by name (plan.generative_recipes).
RECIPES: tuple[Recipe, ...] = (
    FusedFp32(), Fp16(), Fp16TensorRT(), Int8Dynamic(), Int8Static(), Int8TensorRT(),
    GenerativeFp16(), GenerativeInt8(), GenerativeInt4(),
)
