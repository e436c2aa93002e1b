"""How the peers of peers.py run: PyTorch from the source checkpoint recorded in the manifest (eager, or
under autocast), and optimum's ORTModel export of the same checkpoint (fp32, and its dynamic int8).

Each peer reports why it cannot run here (torch or optimum not installed, checkpoint moved) instead of
crashing; the report prints that reason.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from onnxformer.benchmarks.postprocess import finish
from onnxformer.benchmarks.runners import ArtifactContext, Feeds, Runner
from onnxformer.runtime.manifest import Manifest
from onnxformer.runtime.tasks import get_task

INSTALL_HINT = "pip install 'onnxformer[export]'"


# --- availability ----------------------------------------------------------------------------------------
def source_path(manifest: Manifest) -> tuple[Path | None, str | None]:
    """The checkpoint the artifact was exported from, or a reason it cannot be used."""
    if manifest.source_path is None:
        return None, "the manifest records no source checkpoint path"
    path = Path(manifest.source_path)
    if not (path / "config.json").is_file():
        return None, f"source checkpoint {path} (from the manifest) is gone; re-export from an existing checkpoint"
    return path, None


def torch_missing_reason() -> str | None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        return f"PyTorch baseline unavailable: {e.name or 'torch'} is not installed ({INSTALL_HINT})"
    return None


def pytorch_missing(ctx: ArtifactContext) -> str | None:
    """Why the PyTorch baselines cannot run here (None: they can)."""
    return torch_missing_reason() or source_path(ctx.manifest)[1]


def optimum_missing(ctx: ArtifactContext) -> str | None:
    """Why optimum's peer cannot run here: PyTorch's reasons first (its export needs them), then optimum."""
    reason = pytorch_missing(ctx)
    if reason:
        return reason
    try:
        import optimum.onnxruntime  # noqa: F401
    except ImportError:
        return f"optimum peer unavailable: optimum[onnxruntime] is not installed ({INSTALL_HINT})"
    return None


# --- PyTorch -------------------------------------------------------------------------------------------------
def load_pytorch(ctx: ArtifactContext, path: Path, device: str, autocast: str | None, *, half: bool = False,
                 attn: str | None = None, compiled: bool = False) -> Runner:
    """The source checkpoint in PyTorch on ``device``: eager fp32 (``autocast`` None), under bf16/fp16 autocast,
    or with fp16 weights (``half``: ``.half()``); ``attn``: transformers' ``attn_implementation`` ("sdpa",
    "eager"); ``compiled``: wrapped in ``torch.compile`` (compiles on the first call of each shape)."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    torch.set_num_threads(ctx.threads)  # matched budget: torch intra-op threads = ORT intra_op_num_threads
    auto = getattr(transformers, get_task(ctx.task).auto_class)
    safetensors = any(f.endswith(".safetensors") for f in ctx.manifest.source.get("sha256", {}))
    extra = {"attn_implementation": attn} if attn else {}
    model = auto.from_pretrained(path, local_files_only=True, use_safetensors=safetensors or None, **extra).eval()
    model = (model.half() if half else model).to(device)
    size = float(sum(p.numel() * p.element_size() for p in model.parameters()))
    call = torch.compile(model) if compiled else model
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    input_names, output_names = ctx.manifest.input_names, ctx.manifest.output_names
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(autocast or "")

    def cast() -> contextlib.AbstractContextManager:
        return torch.autocast(device_type=device, dtype=dtype) if dtype else contextlib.nullcontext()

    def forward(tensors: dict[str, Any]) -> dict[str, np.ndarray]:
        with torch.inference_mode(), cast():
            out = call(**{k: tensors[k].to(device) for k in input_names})
        return {k: out[k].float().cpu().numpy() for k in output_names}

    model_only, end_to_end = _entry_points(forward, tokenizer, ctx)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def peak() -> float | None:
        """PyTorch's CUDA allocator peak since the last call (then reset, so the next shape starts clean)."""
        if device != "cuda":
            return None
        value = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        return value

    return Runner(model_only, end_to_end, size, synchronize=sync, gpu_memory_mb=peak)


def pytorch(autocast: str | None, *, half: bool = False, attn: str | None = None,
            compiled: bool = False) -> Callable[[ArtifactContext, Path, str], Runner]:
    """A peer's ``load``: PyTorch eager (``autocast`` None) or under ``autocast`` ("bf16", "fp16"), or with fp16
    weights, an attention implementation and torch.compile (load_pytorch)."""
    return lambda ctx, workdir, device: load_pytorch(ctx, source_path(ctx.manifest)[0], device, autocast, half=half,
                                                     attn=attn, compiled=compiled)


# --- optimum -------------------------------------------------------------------------------------------------
# optimum's own export (ORTModel) and dynamic int8 (ORTQuantizer) of the same checkpoint, made once per run in
# the peers' work directory (isolated workers reuse what the parent made there).
_OPTIMUM_FILES = {"fp32": Path("fp32") / "model.onnx", "int8": Path("int8") / "model_quantized.onnx"}


def optimum_prepare(precision: str) -> Callable[[ArtifactContext, Path], None]:
    """A peer's ``prepare``: optimum's fp32 export, then (int8) its dynamic quantization, unless already made."""
    def prepare(ctx: ArtifactContext, workdir: Path) -> None:
        import optimum.onnxruntime as ort_optimum

        from onnxformer.benchmarks.environment import cpu_info

        fp32 = workdir / _OPTIMUM_FILES["fp32"]
        if not fp32.is_file():
            source = source_path(ctx.manifest)[0]
            model = getattr(ort_optimum, get_task(ctx.task).optimum_class).from_pretrained(source, export=True)
            model.save_pretrained(fp32.parent)
        if precision == "int8" and not (workdir / _OPTIMUM_FILES["int8"]).is_file():
            from optimum.onnxruntime.configuration import AutoQuantizationConfig

            # optimum's documented recipe for CPU dynamic quantization, matched to the CPU's instruction set.
            vnni = cpu_info()["flags"]["avx512_vnni"]
            factory = AutoQuantizationConfig.avx512_vnni if vnni else AutoQuantizationConfig.avx2
            config = factory(is_static=False, per_channel=False)
            ort_optimum.ORTQuantizer.from_pretrained(fp32.parent).quantize(
                config, save_dir=workdir / _OPTIMUM_FILES["int8"].parent)

    return prepare


def optimum(precision: str) -> Callable[[ArtifactContext, Path, str], Runner]:
    """A peer's ``load``: the ORTModel ``prepare`` made, on ONNX Runtime's CPU provider."""
    def load(ctx: ArtifactContext, workdir: Path, device: str) -> Runner:
        import optimum.onnxruntime as ort_optimum
        from transformers import AutoTokenizer

        from onnxformer.runtime.session import session_options

        path = workdir / _OPTIMUM_FILES[precision]
        model = getattr(ort_optimum, get_task(ctx.task).optimum_class).from_pretrained(
            path.parent, file_name=path.name, session_options=session_options(ctx.threads),
            provider="CPUExecutionProvider")
        tokenizer = AutoTokenizer.from_pretrained(ctx.manifest.source_path, local_files_only=True)
        return _optimum_runner(model, tokenizer, ctx, float(path.stat().st_size))

    return load


def _optimum_runner(model: Any, tokenizer: Any, ctx: ArtifactContext, size: float) -> Runner:
    input_names, output_names = ctx.manifest.input_names, ctx.manifest.output_names

    def forward(tensors: dict[str, Any]) -> dict[str, np.ndarray]:
        out = model(**{k: tensors[k] for k in input_names})
        return {k: np.asarray(out[k]) for k in output_names}

    model_only, end_to_end = _entry_points(forward, tokenizer, ctx)
    return Runner(model_only, end_to_end, size)


# --- shared --------------------------------------------------------------------------------------------------
ForwardFn = Callable[[dict[str, Any]], dict[str, np.ndarray]]


def _entry_points(forward: ForwardFn, tokenizer: Any, ctx: ArtifactContext) -> tuple[Callable, Callable]:
    """Model-only (numpy feeds in) and end-to-end (texts in: tokenize, run, post-process) calls of a baseline."""
    import torch

    def model_only(feeds: Feeds) -> dict[str, np.ndarray]:
        return forward({k: torch.from_numpy(v) for k, v in feeds.items()})

    def end_to_end(texts: list[str]) -> np.ndarray:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=ctx.manifest.max_length, return_tensors="pt")
        return finish(forward(enc), enc["attention_mask"].numpy(), ctx.task, ctx.post)

    return model_only, end_to_end
