"""The execution-provider registry: the one place that knows each provider's ORT name, default options,
how to tell whether it can run here, and which precisions it takes.

Resolution is plain data in, plain data out (``available`` and ``gpu`` can be injected), so fallbacks,
strict mode and TensorRT option construction are tested on a machine without a GPU.
"""
from __future__ import annotations

import glob
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from onnxformer.artifact.manifest import Manifest, TensorSpec, Variant
from onnxformer.errors import ProviderError

log = logging.getLogger("onnxformer.runtime")


@dataclass(frozen=True)
class Provider:
    name: str  # short name users type: tensorrt / cuda / cpu
    ort_name: str
    precisions: tuple[str, ...]  # variant precisions it runs well (int8 = QDQ/dynamic, as the variant says)
    device: str  # where I/O-bound buffers live
    needs_gpu: bool
    default_options: dict[str, Any] = field(default_factory=dict)


REGISTRY: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("tensorrt", "TensorrtExecutionProvider", ("fp32", "fp16", "int8"), "cuda", True,
                 {"device_id": 0, "trt_max_workspace_size": 4 << 30}),
        Provider("cuda", "CUDAExecutionProvider", ("fp32", "fp16"), "cuda", True,
                 {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}),
        Provider("cpu", "CPUExecutionProvider", ("fp32", "int8"), "cpu", False, {}),
    )
}
DEFAULT_ORDER: tuple[str, ...] = ("tensorrt", "cuda", "cpu")
_BY_ORT_NAME = {p.ort_name.lower(): p.name for p in REGISTRY.values()}


def provider_names(requested: str | Sequence[str]) -> list[str]:
    """``"auto"`` → the default order; a name or list of names (short or ORT spelling) → short names."""
    if isinstance(requested, str):
        requested = list(DEFAULT_ORDER) if requested == "auto" else [requested]
    if not requested:
        raise ProviderError("provider list is empty; name at least one of tensorrt, cuda, cpu (or 'auto')")
    names = []
    for item in requested:
        if not isinstance(item, str):
            raise ProviderError(f"provider {item!r} is not a name; use tensorrt, cuda or cpu")
        name = _BY_ORT_NAME.get(item.lower(), item.lower())
        if name not in REGISTRY:
            raise ProviderError(f"unknown provider {item!r}; choose from {', '.join(DEFAULT_ORDER)} or 'auto'")
        names.append(name)
    return list(dict.fromkeys(names))


def gpu_present() -> bool:
    """An NVIDIA device node or driver entry exists (ORT lists CUDA providers even on machines without one)."""
    return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/proc/driver/nvidia/gpus/*"))


def gpu_name() -> str:
    """The first GPU's model name (engine caches are GPU-specific), or ``no-gpu``."""
    for info in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        for line in Path(info).read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                return line.split(":", 1)[1].strip()
    return os.environ.get("ONNXFORMER_GPU_NAME", "no-gpu")


def unavailable_reason(name: str, available: Sequence[str], gpu: bool) -> str | None:
    """Why ``name`` cannot run here, or None when it can."""
    provider = REGISTRY[name]
    if provider.ort_name not in available:
        return f"{provider.ort_name} is not in this onnxruntime build (install onnxruntime-gpu for GPU providers)"
    if provider.needs_gpu and not gpu:
        return "no NVIDIA GPU device is present"
    return None


@dataclass
class Fallbacks:
    """Collects why each earlier provider was skipped; strict mode turns the first one into an error."""

    strict: bool
    explicit: bool = False  # the user named the providers: a fallback is worth a warning, not just info
    reasons: list[str] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        message = f"provider {name} skipped: {reason}"
        if self.strict:
            raise ProviderError(f"{message} (strict=True forbids falling back; pick another provider)")
        log.log(logging.WARNING if self.explicit else logging.INFO, "%s; falling back", message)
        self.reasons.append(message)

    def exhausted(self) -> ProviderError:
        return ProviderError("no execution provider can run this model: " + "; ".join(self.reasons))


def resolve(requested: str | Sequence[str], try_provider: Callable[[str], Any], *, strict: bool = False,
            available: Sequence[str] | None = None, gpu: bool | None = None) -> Any:
    """Try providers in order; ``try_provider(name)`` returns a result or raises ProviderError with the reason
    (e.g. no variant fits). Returns the first result; each skip is logged, or raised when ``strict``."""
    import onnxruntime as ort

    available = list(ort.get_available_providers()) if available is None else list(available)
    gpu = gpu_present() if gpu is None else gpu
    fallbacks = Fallbacks(strict, explicit=requested != "auto")
    for name in provider_names(requested):
        reason = unavailable_reason(name, available, gpu)
        if reason is None:
            try:
                return try_provider(name)
            except ProviderError as e:
                reason = str(e)
        fallbacks.skip(name, reason)
    raise fallbacks.exhausted()


def session_providers(name: str, options: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """ORT's provider list for ``name``: GPU providers keep CUDA/CPU behind them for nodes they cannot take."""
    chain = {"tensorrt": ["tensorrt", "cuda", "cpu"], "cuda": ["cuda", "cpu"], "cpu": ["cpu"]}[name]
    return [(REGISTRY[p].ort_name, options if p == name else dict(REGISTRY[p].default_options)) for p in chain]


# --- TensorRT ------------------------------------------------------------------------------------------------

# TensorRT 10 builds weakly typed networks by default: ONNX Runtime's EP turns trt_fp16_enable / trt_int8_enable
# into the builder flags kFP16 / kINT8, which let TensorRT pick fp16/int8 kernels per layer (a Q/DQ graph is then
# quantized explicitly, by its own scales; with no calibration table none is needed). Weak typing may also run
# the graph's fp32-kept LayerNorm statistics in fp16, hence trt_layer_norm_fp32_fallback.
# TensorRT 11 builds only strongly typed networks: kFP16, kINT8, calibrators and per-layer precision are gone,
# every tensor runs in the dtype the ONNX graph gives it. The flags mean nothing there and are not set; an fp16
# engine needs an fp16 graph (fp16-trt), an int8 engine a Q/DQ graph (int8-trt).
TENSORRT_MAJORS = (10, 11)
TENSORRT_LIBRARIES = {major: f"libnvinfer.so.{major}" for major in TENSORRT_MAJORS}


def tensorrt_precision_options(precision: str, trt_major: int) -> dict[str, Any]:
    """The precision options ONNX Runtime's TensorRT EP still honours under ``trt_major`` for a graph of
    ``precision`` (plain data: tested per version on CPU)."""
    if trt_major not in TENSORRT_MAJORS:
        raise ProviderError(f"TensorRT {trt_major} is not supported; onnxformer builds engines for TensorRT "
                            f"{' and '.join(map(str, TENSORRT_MAJORS))}")
    if trt_major >= 11:
        return {}  # strongly typed: the graph's dtypes are the engine's precision
    return {"trt_fp16_enable": precision in ("fp16", "int8"),  # int8 engines keep non-quantized layers in fp16
            "trt_int8_enable": precision == "int8",
            **({"trt_layer_norm_fp32_fallback": True} if precision in ("fp16", "int8") else {})}


def engine_precisions(variant_precision: str, trt_major: int) -> list[str]:
    """Engines a variant can be built into: under TensorRT 10 an fp32 graph also yields TensorRT's own (weakly
    typed) fp16 engine; under 11 an engine has exactly its graph's precision."""
    if trt_major < 11 and variant_precision == "fp32":
        return ["fp32", "fp16"]
    return [variant_precision]


def tensorrt_major(ep_library: Path | None = None) -> int:
    """The TensorRT major ONNX Runtime's TensorRT EP is built against: read from the libnvinfer it links
    (onnxruntime-gpu 1.31.1 from PyPI links libnvinfer.so.10), else the newest libnvinfer that loads here, else 10.
    ``ONNXFORMER_TRT_MAJOR`` overrides."""
    import ctypes

    forced = os.environ.get("ONNXFORMER_TRT_MAJOR")
    if forced:
        return int(forced)
    library = ep_library or _tensorrt_ep_library()
    if library is not None and library.is_file():
        linked = re.search(rb"libnvinfer\.so\.(\d+)", library.read_bytes())
        if linked:
            return int(linked.group(1))
    for major in sorted(TENSORRT_MAJORS, reverse=True):
        try:
            ctypes.CDLL(TENSORRT_LIBRARIES[major])
        except OSError:
            continue
        return major
    return 10


def _tensorrt_ep_library() -> Path | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"


def tensorrt_options(manifest: Manifest, variant: Variant, *, max_batch: int, cache_root: Path,
                     ort_version: str, gpu: str, opt_length: int = 128, precision: str | None = None,
                     trt_major: int = 10) -> dict[str, Any]:
    """Precision options for ``trt_major`` (tensorrt_precision_options), shape profiles from the declared dynamic
    axes and the tokenizer limit, and engine/timing caches keyed so a changed model, ORT upgrade, TensorRT major or
    other GPU rebuilds."""
    precision = precision or variant.precision
    if trt_major >= 11 and precision != variant.precision:  # TensorRT 10's flags may still ask for any precision
        raise ProviderError(f"TensorRT {trt_major} cannot build a {precision} engine from the {variant.precision} "
                            f"graph (strongly typed: precision comes from the graph); use a {precision} variant")
    max_length = manifest.max_length or 512
    options = dict(REGISTRY["tensorrt"].default_options)
    options.update(**tensorrt_precision_options(precision, trt_major),
                   **profile_options(shape_profile(manifest.inputs, max_batch, max_length, opt_length)))
    tag = precision if trt_major < 11 else f"{precision}-trt{trt_major}"  # TensorRT 10 keys stay as they were
    cache = engine_cache_dir(cache_root, variant.sha256, tag, ort_version, gpu)
    options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache),
                   trt_timing_cache_enable=True, trt_timing_cache_path=str(cache))
    return options


def shape_profile(inputs: Sequence[TensorSpec], max_batch: int, max_length: int,
                  opt_length: int = 128) -> dict[str, dict[str, list[int]]]:
    """The one TensorRT shape profile (ONNX Runtime's EP and Triton's accelerator both use it): min/opt/max
    dims of every input with dynamic axes. Axis 0 is the batch, other dynamic axes are tokens; the optimum
    is a batch of 8 (or the max) at ``opt_length`` tokens (or the limit)."""
    limits = {"min": (1, 1), "opt": (min(max_batch, 8), min(opt_length, max_length)), "max": (max_batch, max_length)}
    profile: dict[str, dict[str, list[int]]] = {"min": {}, "opt": {}, "max": {}}
    for spec in inputs:
        if not spec.dynamic:
            continue
        for key, (batch, tokens) in limits.items():
            profile[key][spec.name] = [(batch if i == 0 else tokens) if i in spec.dynamic else int(d)
                                       for i, d in enumerate(spec.shape)]
    return profile


def profile_options(profile: dict[str, dict[str, list[int]]]) -> dict[str, str]:
    """``trt_profile_{min,opt,max}_shapes`` strings ("name:1x128,..."), or nothing for static inputs."""
    if not profile["min"]:
        return {}
    return {f"trt_profile_{key}_shapes": ",".join(f"{name}:{'x'.join(map(str, dims))}" for name, dims in shapes.items())
            for key, shapes in profile.items()}


def engine_cache_dir(root: Path, sha256: str, precision: str, ort_version: str, gpu: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", gpu).strip("-") or "gpu"
    return Path(root) / f"{sha256[:16]}-{precision}-ort{ort_version}-{slug}"


def default_cache_root() -> Path:
    root = os.environ.get("ONNXFORMER_TRT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "onnxformer" / "tensorrt"
