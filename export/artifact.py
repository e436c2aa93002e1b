"""The export stage end to end: checkpoint → validated fp32 ONNX → artifact directory with manifest."""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from onnxformer.errors import CheckpointError
from onnxformer.export.checkpoint import Checkpoint, inspect_checkpoint, resolve_model_path
from onnxformer.export.hf import export_onnx, load_reference
from onnxformer.export.staging import staging_dir
from onnxformer.export.tasks import check_architecture, generative_task, get_task, infer_task
from onnxformer.export.validate import hf_reference, validate, validation_cases
from onnxformer.export.versions import library_versions
from onnxformer.runtime.manifest import FORMAT, SCHEMA_VERSION, file_record, save_manifest, variant_record
from onnxformer.runtime.session import create_session

Progress = Callable[[str], None]
# RoBERTa-style models offset positions by padding_idx + 1.
_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2}


@dataclass
class ExportResult:
    out: Path
    manifest: dict[str, Any]
    seconds: float
    task_inferred: bool


def export_checkpoint(
    model: str,
    out: str | Path,
    *,
    task: str | None = None,
    opset: int | None = None,
    atol: float | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    overwrite: bool = False,
    name: str | None = None,
    progress: Progress = lambda _: None,
) -> ExportResult:
    """Export a Hugging Face checkpoint to ``out`` and validate it against PyTorch (decoders and seq2seq with
    their KV cache are handed to export/generative.py once the checkpoint is inspected)."""
    start = time.perf_counter()
    out = Path(out)
    if task is not None and generative_task("", task) is None:
        get_task(task)  # unknown task: fail before any loading
    ckpt = inspect_checkpoint(resolve_model_path(model), allow_pickle=allow_pickle)
    if generative_task(ckpt.model_type, task) is not None:  # decoders / seq2seq with a KV cache
        from onnxformer.export.generative import export_generative

        return export_generative(ckpt, out, task=task, opset=opset, atol=atol, trust_remote_code=trust_remote_code,
                                 overwrite=overwrite, name=name, progress=progress)
    check_architecture(ckpt.model_type)
    inferred = task is None
    spec = get_task(task or infer_task(ckpt.config, ckpt.sentence_transformers is not None))
    progress(f"task: {spec.name}" + (" (inferred from the checkpoint)" if inferred else ""))

    with staging_dir(out, overwrite) as stage:
        progress("loading the PyTorch reference")
        reference = load_reference(ckpt, spec, trust_remote_code)
        tokenizer = _save_tokenizer(ckpt, stage, trust_remote_code)
        progress("exporting with optimum")
        export_onnx(reference, spec, stage / "fp32", opset)
        progress("validating against PyTorch on new shapes")
        session = create_session(stage / "fp32" / "model.onnx")
        inputs = [_io_record(i) for i in session.get_inputs()]
        cases = validation_cases(tokenizer, [i["name"] for i in inputs], int(ckpt.config.get("vocab_size", 100)))
        validation = validate(hf_reference(reference), stage / "fp32" / "model.onnx", cases, atol or spec.atol)
        manifest = _manifest(ckpt, spec, stage, tokenizer, inputs, [_io_record(o) for o in session.get_outputs()],
                             validation, opset)
        manifest["name"] = name or manifest["name"]
        del session
        save_manifest(stage, manifest)
    return ExportResult(out, manifest, time.perf_counter() - start, inferred)


def _save_tokenizer(ckpt: Checkpoint, stage: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(ckpt.path, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt.path} has no usable tokenizer ({str(e).splitlines()[0]})") from None
    if not tokenizer.is_fast:
        raise CheckpointError(f"{ckpt.path} has no fast tokenizer (tokenizer.json); the runtime needs one")
    tokenizer.save_pretrained(stage)
    return tokenizer


def _io_record(node: Any) -> dict[str, Any]:
    dtype = node.type.removeprefix("tensor(").removesuffix(")")
    dtype = {"float": "float32", "double": "float64"}.get(dtype, dtype)
    return {
        "name": node.name,
        "dtype": dtype,
        "shape": [d if isinstance(d, int) else str(d) for d in node.shape],
        "dynamic_axes": {str(i): str(d) for i, d in enumerate(node.shape) if not isinstance(d, int)},
    }


def _max_length(ckpt: Checkpoint, tokenizer: Any) -> int:
    cfg = ckpt.config
    limits = [int(cfg.get("max_position_embeddings", 512)) - _POSITION_OFFSET.get(ckpt.model_type, 0)]
    if 0 < tokenizer.model_max_length < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    if ckpt.sentence_transformers and ckpt.sentence_transformers.get("max_seq_length"):
        limits.append(int(ckpt.sentence_transformers["max_seq_length"]))
    return min(limits)


def _postprocess(ckpt: Checkpoint, task: str) -> dict[str, Any]:
    cfg = ckpt.config
    if task == "feature-extraction":
        st = ckpt.sentence_transformers
        if st:
            return {"pooling": st["pooling"], "normalize": st["normalize"], "source": "sentence-transformers"}
        return {"pooling": "mean", "normalize": False, "source": "default (no sentence-transformers config)"}
    if task in ("text-classification", "token-classification"):
        id2label = {str(k): v for k, v in (cfg.get("id2label") or {}).items()}
        activation = "sigmoid" if cfg.get("problem_type") == "multi_label_classification" else "softmax"
        return {"id2label": id2label, "activation": activation}
    return {}


def _architecture(ckpt: Checkpoint) -> dict[str, Any]:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(ckpt.path, local_files_only=True)
    return {
        "model_type": ckpt.model_type,
        "architectures": ckpt.config.get("architectures") or [],
        "num_layers": getattr(cfg, "num_hidden_layers", None),
        "hidden_size": getattr(cfg, "hidden_size", None),
        "num_heads": getattr(cfg, "num_attention_heads", None),
        "intermediate_size": getattr(cfg, "intermediate_size", getattr(cfg, "hidden_dim", None)),
        "vocab_size": getattr(cfg, "vocab_size", None),
        "max_position_embeddings": getattr(cfg, "max_position_embeddings", None),
    }


def _manifest(ckpt: Checkpoint, spec: Any, stage: Path, tokenizer: Any, inputs: list, outputs: list,
              validation: dict[str, Any], opset: int | None) -> dict[str, Any]:
    import onnx

    graph = onnx.load(str(stage / "fp32" / "model.onnx"), load_external_data=False)
    actual_opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    tok_files = [p.name for p in stage.iterdir() if p.is_file()]
    fp32 = variant_record(
        stage, "fp32/model.onnx", precision="fp32", providers=["tensorrt", "cuda", "cpu"],
        made_by={"tool": "optimum.exporters.onnx", "opset": actual_opset, "requested_opset": opset},
        fidelity={"reference": "pytorch-fp32", "max_abs_diff": validation["max_abs_diff"]},
    )
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "name": ckpt.path.name,
        "task": spec.name,
        "architecture": _architecture(ckpt),
        "source": ckpt.fingerprint(),
        "opset": actual_opset,
        "inputs": inputs,
        "outputs": outputs,
        "tokenizer": {
            "files": file_record(stage, tok_files),
            "max_length": _max_length(ckpt, tokenizer),
            "pad_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
            "pad_token": tokenizer.pad_token,
        },
        "postprocess": _postprocess(ckpt, spec.name),
        "versions": library_versions(),
        "validation": validation,
        "variants": {"fp32": fp32},
    }
