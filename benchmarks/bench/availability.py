"""How the peers of peers.py run: PyTorch from the source checkpoint recorded in the manifest (eager, or
under autocast), in this process; and what the script peers (peer_*.py: optimum, sentence-transformers' ONNX
backend, OpenVINO), which run in their own environments, need to know about the artifact.

Each peer reports why it cannot run here (torch not installed, checkpoint moved) instead of crashing; the
report prints that reason.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from onnxformer.artifact.manifest import Manifest
from onnxformer.artifact.tasks import get_task
from onnxformer.benchmarks.postprocess import finish, pooled
from onnxformer.benchmarks.runners import ArtifactContext, Feeds, Runner
from onnxformer.errors import ArtifactError

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
    auto_class = get_task(ctx.task).auto_class
    assert auto_class is not None, ctx.task  # bench measures tasks exported from transformers checkpoints
    auto = getattr(transformers, auto_class)
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

    return Runner(model_only, end_to_end, size, synchronize=sync, gpu_memory_mb=peak,
                  set_threads=torch.set_num_threads if device == "cpu" else None)


def pytorch(autocast: str | None, *, half: bool = False, attn: str | None = None,
            compiled: bool = False) -> Callable[[ArtifactContext, Path, str], Runner]:
    """A peer's ``load``: PyTorch eager (``autocast`` None) or under ``autocast`` ("bf16", "fp16"), or with fp16
    weights, an attention implementation and torch.compile (load_pytorch)."""
    def load(ctx: ArtifactContext, workdir: Path, device: str) -> Runner:
        path, reason = source_path(ctx.manifest)
        if path is None:  # the candidate was listed only when the source was there (pytorch_missing)
            raise ArtifactError(reason or "the source checkpoint is missing")
        return load_pytorch(ctx, path, device, autocast, half=half, attn=attn, compiled=compiled)
    return load


# --- script peers (peer_*.py, each in its own environment) -------------------------------------------------
OPTIMUM_CLASSES = {  # task → optimum.onnxruntime's ORTModel class (peer_optimum.py loads it)
    "feature-extraction": "ORTModelForFeatureExtraction",
    "text-classification": "ORTModelForSequenceClassification",
    "token-classification": "ORTModelForTokenClassification",
    "question-answering": "ORTModelForQuestionAnswering",
}


def optimum_missing(ctx: ArtifactContext) -> str | None:
    """Why optimum's peer cannot run here: its export reads the source checkpoint; ORTModel covers the task."""
    if ctx.task not in OPTIMUM_CLASSES:
        return f"optimum peer unavailable: optimum has no ORTModel class for {ctx.task!r} here"
    return source_path(ctx.manifest)[1]


def st_missing(ctx: ArtifactContext) -> str | None:
    """sentence-transformers' ONNX backend: embedding tasks of a sentence-transformers checkpoint only."""
    path, reason = source_path(ctx.manifest)
    if reason or path is None:
        return reason or "sentence-transformers peer unavailable: no source checkpoint"
    if not pooled(ctx.task) or not (path / "modules.json").is_file():
        return "sentence-transformers peer unavailable: the source is not a sentence-transformers embedding model"
    return None


def openvino_missing(ctx: ArtifactContext) -> str | None:
    """OpenVINO reads the artifact's own fp32 ONNX (no checkpoint needed)."""
    if "fp32" not in ctx.manifest.variants:
        return "OpenVINO peer unavailable: the artifact has no fp32 variant to convert"
    return None


def script_spec(ctx: ArtifactContext, precision: str, workdir: Path, scratch: Path) -> dict[str, Any]:
    """What a peer script (peer_common.py's protocol) needs besides the shapes: paths, names, post-processing,
    and the artifact's own calibration feeds (the texts and tokenization our int8 calibrates on)."""
    from onnxformer.artifact.files import confined
    from onnxformer.benchmarks.environment import cpu_info
    from onnxformer.quantize.fidelity import evaluation_feeds
    from onnxformer.quantize.texts import calibration_texts

    manifest, post = ctx.manifest, ctx.post
    feeds = evaluation_feeds(ctx.directory, manifest, calibration_texts())
    arrays: dict[str, Any] = {f"{i}/{k}": v for i, f in enumerate(feeds) for k, v in f.items()}
    np.savez(scratch / "calibration.npz", **arrays)
    return {"precision": precision, "workdir": str(workdir), "source": manifest.source_path, "threads": ctx.threads,
            "fp32_onnx": str(confined(ctx.directory, manifest.variants["fp32"].file)) if "fp32" in manifest.variants
            else None, "tokenizer": str(confined(ctx.directory, "tokenizer.json")),
            "pad_id": manifest.tokenizer.pad_id if manifest.tokenizer else 0, "max_length": manifest.max_length,
            "input_names": manifest.input_names, "output_names": manifest.output_names,
            "optimum_class": OPTIMUM_CLASSES.get(ctx.task), "avx512_vnni": cpu_info()["flags"]["avx512_vnni"],
            "pooled": pooled(ctx.task), "pooling": post.pooling, "normalize": post.normalize,
            "activation": post.activation, "calibration": str(scratch / "calibration.npz"),
            "calibration_count": len(feeds)}


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
