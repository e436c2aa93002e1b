"""What every export records about its checkpoint and graph: the typed manifest parts, built once for encoder,
generative and plain-module exports alike."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxformer.errors import CheckpointError
from onnxformer.export.checkpoint import Checkpoint
from onnxformer.artifact.manifest import (UNFUSED, Architecture, TensorSpec, TokenizerSpec, Variant, file_record,
                                         tensor_spec, variant_record)
from onnxformer.runtime.session import create_session

FP32_PROVIDERS = ["tensorrt", "cuda", "cpu"]


def save_tokenizer(ckpt: Checkpoint, stage: Path, trust_remote_code: bool) -> Any:
    """Save the checkpoint's fast tokenizer into the artifact (the runtime needs tokenizer.json)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(ckpt.path, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt.path} has no usable tokenizer ({str(e).splitlines()[0]})") from None
    if not tokenizer.is_fast:
        raise CheckpointError(f"{ckpt.path} has no fast tokenizer (tokenizer.json); the runtime needs one")
    tokenizer.save_pretrained(stage)
    return tokenizer


def tokenizer_spec(stage: Path, max_length: int, pad_id: int, pad_token: str | None) -> TokenizerSpec:
    """Every file at the artifact root so far (the tokenizer's), hashed."""
    files = [p.name for p in stage.iterdir() if p.is_file() and not p.name.startswith(".")]  # not the stage lock
    return TokenizerSpec(file_record(stage, files), int(max_length), int(pad_id), pad_token)


def io_specs(graph: Path | Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs of a graph (a path, or a session already open on it) as ONNX Runtime sees them."""
    session = create_session(graph) if isinstance(graph, Path) else graph
    return [tensor_spec(i) for i in session.get_inputs()], [tensor_spec(o) for o in session.get_outputs()]


def graph_opset(path: Path) -> int:
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))


def architecture(ckpt: Checkpoint) -> Architecture:
    """Sizes from transformers' own config class (it knows each family's attribute names)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(ckpt.path, local_files_only=True)
    return Architecture(
        model_type=ckpt.model_type,
        architectures=list(ckpt.config.get("architectures") or []),
        num_layers=getattr(cfg, "num_hidden_layers", None),
        hidden_size=getattr(cfg, "hidden_size", None),
        num_heads=getattr(cfg, "num_attention_heads", None),
        intermediate_size=getattr(cfg, "intermediate_size", getattr(cfg, "hidden_dim", None)),
        vocab_size=getattr(cfg, "vocab_size", None),
        max_position_embeddings=getattr(cfg, "max_position_embeddings", None),
    )


def fp32_variant(stage: Path, file: str, validation: dict[str, Any], made_by: dict[str, Any],
                 providers: list[str] | None = None, **extra: Any) -> Variant:
    """The reference variant as exported: unfused, measured against PyTorch by the export's validation."""
    return variant_record(stage, file, precision="fp32", providers=providers or FP32_PROVIDERS, made_by=made_by,
                          fidelity={"reference": "pytorch-fp32", "max_abs_diff": validation["max_abs_diff"]},
                          graph=UNFUSED, **extra)
