"""Encoder checkpoints (embeddings, classification, token classification, QA) → validated fp32 artifact."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from onnxformer.artifact import families
from onnxformer.artifact.manifest import Manifest, Postprocess, build_manifest
from onnxformer.artifact.tasks import Task
from onnxformer.export.checkpoint import Checkpoint
from onnxformer.export.describe import architecture, fp32_variant, graph_opset, io_specs, save_tokenizer, tokenizer_spec
from onnxformer.export.hf import export_onnx, load_reference
from onnxformer.export.staging import staging_dir
from onnxformer.export.validate import hf_reference, validate, validation_cases
from onnxformer.export.versions import library_versions

Progress = Callable[[str], None]
GRAPH = "fp32/model.onnx"


def export_encoder(ckpt: Checkpoint, spec: Task, out: Path, *, opset: int | None, atol: float | None,
                   trust_remote_code: bool, overwrite: bool, name: str | None, progress: Progress) -> Manifest:
    """Export, validate on shapes unlike the trace's, and publish the artifact in one rename."""
    with staging_dir(out, overwrite) as stage:
        progress("loading the PyTorch reference")
        reference = load_reference(ckpt, spec, trust_remote_code)
        tokenizer = save_tokenizer(ckpt, stage, trust_remote_code, reference)
        progress("exporting with torch.onnx (dynamo)")
        made_by = export_onnx(reference, spec, stage / "fp32", opset)
        progress("validating against PyTorch on new shapes")
        inputs, outputs = io_specs(stage / GRAPH)
        vocab = int(ckpt.config.get("vocab_size", 100))
        cases = validation_cases(tokenizer, [i.name for i in inputs], vocab)
        validation = validate(hf_reference(reference), stage / GRAPH, cases, atol or spec.atol)
        actual = graph_opset(stage / GRAPH)
        manifest = build_manifest(
            name=name or ckpt.path.name, task=spec.name, architecture=architecture(ckpt), source=ckpt.fingerprint(),
            opset=actual, inputs=inputs, outputs=outputs, versions=library_versions(), validation=validation,
            tokenizer=tokenizer_spec(stage, _max_length(ckpt, tokenizer), _pad_id(tokenizer), tokenizer.pad_token),
            postprocess=_postprocess(ckpt, spec.name),
            fp32=fp32_variant(stage, GRAPH, validation, {**made_by, "opset": actual, "requested_opset": opset}),
        )
        manifest.save(stage)
    return manifest


def _pad_id(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)


def _max_length(ckpt: Checkpoint, tokenizer: Any) -> int:
    cfg = ckpt.config
    family = families.find(ckpt.model_type)
    offset = family.position_offset if family else 0
    limits = [int(cfg.get("max_position_embeddings", 512)) - offset]
    if 0 < tokenizer.model_max_length < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    if ckpt.sentence_transformers and ckpt.sentence_transformers.get("max_seq_length"):
        limits.append(int(ckpt.sentence_transformers["max_seq_length"]))
    return min(limits)


def _postprocess(ckpt: Checkpoint, task: str) -> Postprocess:
    cfg = ckpt.config
    if task == "feature-extraction":
        st = ckpt.sentence_transformers
        if st:
            return Postprocess(pooling=st["pooling"], normalize=st["normalize"], truncate_dim=st.get("truncate_dim"),
                               prompts=st.get("prompts") or {}, default_prompt_name=st.get("default_prompt_name"),
                               extra={"source": "sentence-transformers"})
        return Postprocess(pooling="mean", normalize=False, extra={"source": "default (no sentence-transformers config)"})
    if task in ("text-classification", "token-classification"):
        id2label = {str(k): str(v) for k, v in (cfg.get("id2label") or {}).items()}
        activation = "sigmoid" if cfg.get("problem_type") == "multi_label_classification" else "softmax"
        return Postprocess(id2label=id2label, activation=activation)
    return Postprocess()
