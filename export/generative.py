"""Generative checkpoints → validated ONNX with a KV cache: decoder-only (one graph, with and without
past; export/decoder_graph.py) and encoder-decoder (encoder, first decoder step, decoder with past;
export/seq2seq_graph.py), through ``torch.onnx.export(..., dynamo=True)``.

The manifest gains a ``generation`` section: which graphs make up the model, the cache layout, the
special token ids and the position limit — everything the torch-free runtime needs to generate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from onnxformer.artifact import families
from onnxformer.artifact.dtypes import numpy_name
from onnxformer.artifact.families import DECODER as DECODER_KIND
from onnxformer.artifact.families import SEQ2SEQ
from onnxformer.artifact.manifest import Generation, Manifest, build_manifest
from onnxformer.artifact.roles import DECODER, DECODER_WITH_PAST, GENERATIVE_FILES, SLOTS, SLOTS_FILE
from onnxformer.artifact.tasks import TASKS
from onnxformer.errors import CheckpointError, ExportError
from onnxformer.export import decoder_slots
from onnxformer.export.checkpoint import Checkpoint
from onnxformer.export.decoder_graph import export_decoder_graph
from onnxformer.export.describe import architecture, fp32_variant, graph_opset, io_specs, save_tokenizer, tokenizer_spec
from onnxformer.export.detect import generative_task
from onnxformer.export.dynamo import made_by
from onnxformer.export.generative_validate import past_names, validate_decoder, validate_decoder_slots, validate_seq2seq
from onnxformer.export.hf import _first_line, load_reference
from onnxformer.export.staging import staging_dir
from onnxformer.export.versions import library_versions
from onnxformer.runtime.session import create_session

Progress = Callable[[str], None]
DEFAULT_ATOL = 1e-4


def export_generative(
    ckpt: Checkpoint,
    out: str | Path,
    *,
    task: str | None = None,
    opset: int | None = None,
    atol: float | None = None,
    trust_remote_code: bool = False,
    overwrite: bool = False,
    name: str | None = None,
    progress: Progress = lambda _: None,
) -> Manifest:
    """Export an inspected decoder-only or encoder-decoder checkpoint with its KV cache, validated against PyTorch.

    Reached through ``export_checkpoint``, which resolves and safety-checks the checkpoint first.
    """
    out = Path(out)
    task_name = _check_family(ckpt.model_type, task)
    kind = families.get_family(ckpt.model_type).kind
    progress(f"task: {task_name} ({kind}, KV cache)")
    with staging_dir(out, overwrite) as stage:
        progress("loading the PyTorch reference")
        reference = load_reference(ckpt, TASKS[task_name], trust_remote_code)
        tokenizer = save_tokenizer(ckpt, stage, trust_remote_code, reference)
        progress("exporting with torch.onnx (dynamo, with past)")
        _export(reference, kind, stage / "fp32", opset)
        paths = {role: stage / "fp32" / f for role, f in GENERATIVE_FILES[kind].items()}
        progress("validating against PyTorch (prompt lengths 1-11, non-empty past)")
        validation = _validate(reference, kind, paths, atol or DEFAULT_ATOL)
        slots = _slots(reference, kind, stage, paths, opset, atol or DEFAULT_ATOL, progress)
        manifest = _manifest(ckpt, task_name, kind, stage, tokenizer, reference, validation, opset, slots)
        manifest.name = name or manifest.name
        manifest.save(stage)
    return manifest


def _check_family(model_type: str, task: str | None) -> str:
    task_name = generative_task(model_type, task)
    family = families.find(model_type)
    if task_name is None or family is None or task_name not in family.tasks:
        raise CheckpointError(
            f"{model_type!r} cannot be exported for {task or 'generation'}; supported: text-generation "
            f"({', '.join(families.names(DECODER))}), text2text-generation ({', '.join(families.names(SEQ2SEQ))})"
        )
    return task_name


def _export(model: Any, kind: str, out_dir: Path, opset: int | None) -> None:
    if kind == "decoder":
        export_decoder_graph(model, out_dir / GENERATIVE_FILES[DECODER_KIND][DECODER], opset)
        return
    try:  # its own module; imported here so decoder exports do not depend on it
        from onnxformer.export.seq2seq_graph import export_seq2seq_graphs
    except ImportError as e:
        raise ExportError(f"encoder-decoder export is not available in this build ({_first_line(e)})") from e
    export_seq2seq_graphs(model, out_dir, opset)
    missing = [f for f in GENERATIVE_FILES[kind].values() if not (out_dir / f).is_file()]
    if missing:
        raise ExportError(f"the encoder-decoder export did not write {missing} in {out_dir}")


def _slots(model: Any, kind: str, stage: Path, paths: dict[str, Path], opset: int | None, atol: float,
           progress: Progress) -> dict[str, Any] | None:
    """The decoder's slot graph (continuous batching on GroupQueryAttention), exported and validated; or why the
    family cannot have one (its artifacts batch on the shared-width graph). None for seq2seq."""
    if kind != "decoder":
        return None
    reason = decoder_slots.unsupported(model)
    if reason is not None:
        progress(f"no slot graph: {reason}")
        return {"unsupported": reason}
    progress("exporting the slot graph (GroupQueryAttention, cache in place)")
    path = stage / "fp32" / SLOTS_FILE
    decoder_slots.export_decoder_slots(model, path, opset)
    layout = cache_layout(create_session(paths[DECODER]), model.config, kind)
    result = validate_decoder_slots(model, path, layout, model.config.vocab_size, atol)
    return {"role": SLOTS, "file": f"fp32/{SLOTS_FILE}",
            "validation": {k: result[k] for k in ("atol", "max_abs_diff", "passed")}}


def _validate(model: Any, kind: str, paths: dict[str, Path], atol: float) -> dict[str, Any]:
    cfg = model.config
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    if kind == "decoder":
        return validate_decoder(model, paths[DECODER], cfg.vocab_size, pad, atol)
    return validate_seq2seq(model, paths, cfg.vocab_size, pad, int(cfg.decoder_start_token_id), atol)


def cache_layout(session: Any, config: Any, kind: str) -> dict[str, Any]:
    """Names, shapes and dtype of the KV cache as the graph declares them (batch, kv_heads, seq, head_size)."""
    inputs = {i.name: i for i in session.get_inputs()}
    self_kind = "decoder" if kind == "seq2seq" else None
    layers = past_names(list(inputs), self_kind)
    if not layers:
        raise ExportError(f"the exported graph has no past_key_values inputs (got {sorted(inputs)})")
    first = inputs[layers[0][0]]
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "decoder_attention_heads", None)
    layout = {
        "layout": ["batch", "kv_heads", "sequence", "head_size"],
        "num_layers": len(layers),
        "num_heads": heads,
        "num_kv_heads": int(first.shape[1]),
        "head_size": int(first.shape[3]),
        "dtype": numpy_name(first.type),
        "past_inputs": [list(pair) for pair in layers],
        "present_outputs": [[n.replace("past_key_values.", "present.", 1) for n in pair] for pair in layers],
    }
    if kind == "seq2seq":
        cross = past_names(list(inputs), "encoder")
        layout["cross_past_inputs"] = [list(pair) for pair in cross]
        layout["cross_present_outputs"] = [[n.replace("past_key_values.", "present.", 1) for n in p] for p in cross]
    return layout


def special_tokens(model: Any, tokenizer: Any) -> dict[str, Any]:
    """Token ids the generation loop needs; eos may be several ids (generation_config allows a list). The
    generation config wins; the model config is the fallback (transformers 5 configs define only their own ids)."""
    gen, cfg = model.generation_config, model.config

    def pick(key: str) -> Any:
        value = getattr(gen, key, None)
        return value if value is not None else getattr(cfg, key, None)

    eos = pick("eos_token_id")
    eos_ids = [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]
    pad = next(v for v in (pick("pad_token_id"), tokenizer.pad_token_id, *eos_ids, 0) if v is not None)
    return {
        "bos_token_id": pick("bos_token_id"),
        "eos_token_ids": eos_ids,
        "pad_token_id": int(pad),
        "decoder_start_token_id": pick("decoder_start_token_id"),
        "forced_bos_token_id": getattr(gen, "forced_bos_token_id", None),
        "forced_eos_token_id": getattr(gen, "forced_eos_token_id", None),
    }


def max_positions(config: Any, tokenizer: Any) -> int:
    limit = next((getattr(config, k) for k in ("max_position_embeddings", "n_positions") if getattr(config, k, None)),
                 None)
    if limit is None:
        limit = tokenizer.model_max_length if 0 < tokenizer.model_max_length < 1_000_000 else 512
    return int(limit)


def _manifest(ckpt: Checkpoint, task: str, kind: str, stage: Path, tokenizer: Any, model: Any,
              validation: dict[str, Any], opset: int | None, slots: dict[str, Any] | None = None) -> Manifest:
    files = {role: f"fp32/{f}" for role, f in GENERATIVE_FILES[kind].items()}
    if slots and "role" in slots:
        files[slots["role"]] = slots["file"]
    main = DECODER_WITH_PAST if kind == "seq2seq" else "decoder"
    actual_opset = graph_opset(stage / files[DECODER])
    session = create_session(stage / files[main])
    inputs, outputs = io_specs(session)
    names = [i.name for i in inputs]
    positions = max_positions(model.config, tokenizer)
    specials = special_tokens(model, tokenizer)
    fp32 = fp32_variant(stage, files[DECODER], validation,
                        {**made_by(actual_opset), "requested_opset": opset},
                        providers=["cuda", "cpu"], components=files, cache_dtype="float32")
    generation = Generation(kind=kind, cache=cache_layout(session, model.config, kind), special_tokens=specials,
                            max_positions=positions, position_ids="position_ids" in names,
                            logits_to_keep="logits_to_keep" in names, extra={"slots": slots} if slots else {})
    return build_manifest(
        name=ckpt.path.name, task=task, architecture=architecture(ckpt), source=ckpt.fingerprint(), opset=actual_opset,
        inputs=inputs, outputs=outputs, versions=library_versions(), validation=validation, fp32=fp32,
        tokenizer=tokenizer_spec(stage, positions, specials["pad_token_id"], tokenizer.pad_token),
        generation=generation,
    )
