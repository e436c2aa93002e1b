"""Reference points from the source checkpoint recorded in the manifest.

- PyTorch eager fp32, and the fast PyTorch setting a user tries first: bf16 autocast on CPU
  (AMX/AVX-512-BF16 where present), fp16 autocast on CUDA.
- optimum's ORTModel for the same checkpoint (fp32, and its dynamic int8): our nearest peer.

A baseline that cannot run here (torch or optimum not installed, checkpoint moved) becomes a
Candidate with a reason, which the report prints instead of crashing.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from onnxformer.benchmarks.postprocess import finish
from onnxformer.benchmarks.runners import ArtifactContext, Candidate, Feeds, Runner

AUTO_CLASSES = {  # task → (transformers auto-class, optimum ORTModel class)
    "feature-extraction": ("AutoModel", "ORTModelForFeatureExtraction"),
    "text-classification": ("AutoModelForSequenceClassification", "ORTModelForSequenceClassification"),
    "token-classification": ("AutoModelForTokenClassification", "ORTModelForTokenClassification"),
    "question-answering": ("AutoModelForQuestionAnswering", "ORTModelForQuestionAnswering"),
}
INSTALL_HINT = "pip install 'onnxformer[export]'"


def source_path(manifest: dict[str, Any]) -> tuple[Path | None, str | None]:
    """The checkpoint the artifact was exported from, or a reason it cannot be used."""
    raw = (manifest.get("source") or {}).get("path")
    if not raw:
        return None, "the manifest records no source checkpoint path"
    path = Path(raw)
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


def pytorch_candidates(ctx: ArtifactContext, devices: list[str]) -> list[Candidate]:
    """PyTorch eager fp32 and autocast (bf16 on CPU, fp16 on CUDA) per device."""
    specs = [(f"pytorch-fp32@{d}", d, None) for d in devices]
    specs += [(f"pytorch-{'bf16' if d == 'cpu' else 'fp16'}@{d}", d, "bf16" if d == "cpu" else "fp16") for d in devices]
    path, reason = source_path(ctx.manifest)
    reason = torch_missing_reason() or reason
    out = []
    for name, device, autocast in specs:
        precision = autocast or "fp32"
        kind_device = "gpu" if device == "cuda" else "cpu"
        if reason:
            out.append(Candidate(name, "pytorch", kind_device, precision, reason=reason))
        else:
            out.append(Candidate(name, "pytorch", kind_device, precision,
                                 load=lambda p=path, d=device, a=autocast: load_pytorch(ctx, p, d, a)))
    return out


def load_pytorch(ctx: ArtifactContext, path: Path, device: str, autocast: str | None) -> Runner:
    import torch
    import transformers
    from transformers import AutoTokenizer

    torch.set_num_threads(ctx.threads)  # matched budget: torch intra-op threads = ORT intra_op_num_threads
    auto = getattr(transformers, AUTO_CLASSES[ctx.task][0])
    safetensors = any(f.endswith(".safetensors") for f in ctx.manifest["source"].get("sha256", {}))
    model = auto.from_pretrained(path, local_files_only=True, use_safetensors=safetensors or None).eval().to(device)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    input_names = [i["name"] for i in ctx.manifest["inputs"]]
    output_names = [o["name"] for o in ctx.manifest["outputs"]]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(autocast or "")

    def cast() -> contextlib.AbstractContextManager:
        return torch.autocast(device_type=device, dtype=dtype) if dtype else contextlib.nullcontext()

    def forward(tensors: dict[str, Any]) -> dict[str, np.ndarray]:
        with torch.inference_mode(), cast():
            out = model(**{k: tensors[k].to(device) for k in input_names})
        return {k: out[k].float().cpu().numpy() for k in output_names}

    model_only, end_to_end = _entry_points(forward, tokenizer, ctx)
    size = float(sum(p.numel() * p.element_size() for p in model.parameters()))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    def peak() -> float | None:
        """PyTorch's CUDA allocator peak since the last call (then reset, so the next shape starts clean)."""
        if device != "cuda":
            return None
        value = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        return value

    return Runner(model_only, end_to_end, size, synchronize=sync, gpu_memory_mb=peak)


class OptimumPeer:
    """optimum's own export (ORTModel) and dynamic int8 (ORTQuantizer) of the same checkpoint, made once."""

    def __init__(self, ctx: ArtifactContext, avx512_vnni: bool, workdir: Path | None = None):
        """``workdir``: reuse the models a parent process already made there (isolated runs); else a temp dir."""
        self.ctx = ctx
        self.avx512_vnni = avx512_vnni
        self.owned = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="onnxformer-bench-optimum-")) if workdir is None else Path(workdir)
        made = {"fp32": self.workdir / "fp32" / "model.onnx", "int8": self.workdir / "int8" / "model_quantized.onnx"}
        self.dirs: dict[str, Path] = {k: p.parent for k, p in made.items() if p.is_file()}

    def candidates(self) -> list[Candidate]:
        path, reason = source_path(self.ctx.manifest)
        reason = torch_missing_reason() or reason
        try:
            import optimum.onnxruntime  # noqa: F401
        except ImportError:
            reason = reason or f"optimum peer unavailable: optimum[onnxruntime] is not installed ({INSTALL_HINT})"
        out = []
        for precision in ("fp32", "int8"):
            name = f"optimum-{precision}@cpu"
            if reason:
                out.append(Candidate(name, "peer", "cpu", precision, reason=reason))
            else:
                out.append(Candidate(name, "peer", "cpu", precision, load=lambda p=precision: self.load(p),
                                     prepare=lambda p=path, q=precision: self.prepare(p, q)))
        return out

    def prepare(self, source: Path, precision: str) -> None:
        import optimum.onnxruntime as ort_optimum

        if "fp32" not in self.dirs:
            model = getattr(ort_optimum, AUTO_CLASSES[self.ctx.task][1]).from_pretrained(source, export=True)
            model.save_pretrained(self.workdir / "fp32")
            self.dirs["fp32"] = self.workdir / "fp32"
        if precision == "int8" and "int8" not in self.dirs:
            from optimum.onnxruntime.configuration import AutoQuantizationConfig

            # optimum's documented recipe for CPU dynamic quantization, matched to the CPU's instruction set.
            factory = AutoQuantizationConfig.avx512_vnni if self.avx512_vnni else AutoQuantizationConfig.avx2
            config = factory(is_static=False, per_channel=False)
            ort_optimum.ORTQuantizer.from_pretrained(self.dirs["fp32"]).quantize(config, save_dir=self.workdir / "int8")
            self.dirs["int8"] = self.workdir / "int8"

    def load(self, precision: str) -> Runner:
        import optimum.onnxruntime as ort_optimum
        from transformers import AutoTokenizer

        from onnxformer.runtime.session import session_options

        directory = self.dirs[precision]
        file_name = "model_quantized.onnx" if precision == "int8" else "model.onnx"
        model = getattr(ort_optimum, AUTO_CLASSES[self.ctx.task][1]).from_pretrained(
            directory, file_name=file_name, session_options=session_options(self.ctx.threads),
            provider="CPUExecutionProvider")
        tokenizer = AutoTokenizer.from_pretrained(self.ctx.manifest["source"]["path"], local_files_only=True)
        return _optimum_runner(model, tokenizer, self.ctx, float((directory / file_name).stat().st_size))

    def close(self) -> None:
        if self.owned:  # a temp dir of ours: nothing in it is worth keeping
            shutil.rmtree(self.workdir, ignore_errors=True)


def _optimum_runner(model: Any, tokenizer: Any, ctx: ArtifactContext, size: float) -> Runner:
    input_names = [i["name"] for i in ctx.manifest["inputs"]]
    output_names = [o["name"] for o in ctx.manifest["outputs"]]

    def forward(tensors: dict[str, Any]) -> dict[str, np.ndarray]:
        out = model(**{k: tensors[k] for k in input_names})
        return {k: np.asarray(out[k]) for k in output_names}

    model_only, end_to_end = _entry_points(forward, tokenizer, ctx)
    return Runner(model_only, end_to_end, size)


ForwardFn = Callable[[dict[str, Any]], dict[str, np.ndarray]]


def _entry_points(forward: ForwardFn, tokenizer: Any, ctx: ArtifactContext) -> tuple[Callable, Callable]:
    """Model-only (numpy feeds in) and end-to-end (texts in: tokenize, run, post-process) calls of a baseline."""
    import torch

    def model_only(feeds: Feeds) -> dict[str, np.ndarray]:
        return forward({k: torch.from_numpy(v) for k, v in feeds.items()})

    def end_to_end(texts: list[str]) -> np.ndarray:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=ctx.manifest["tokenizer"]["max_length"],
                        return_tensors="pt")
        return finish(forward(enc), enc["attention_mask"].numpy(), ctx.task, ctx.post)

    return model_only, end_to_end
