"""fp16, int8 (dynamic) and int4 (MatMulNBits, weight-only) variants of generative artifacts.

Every graph of the model (the decoder, or encoder + both seq2seq decoders) is converted with ONNX
Runtime's own tooling; our code only chooses settings and measures. Fidelity against the fp32
variant is measured teacher-forced on the evaluation texts (the prompt-processing graph sees the
whole text; logits at every position):

- ``next_token_agreement``: fraction of positions where the variant's argmax equals fp32's;
- ``perplexity`` of each on the texts themselves and ``perplexity_delta`` (variant / fp32 − 1).

The numbers go into the manifest with the variant, like every other variant's fidelity.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from onnxformer.errors import QuantizationError
from onnxformer.runtime.files import confined
from onnxformer.runtime.generation import Generator
from onnxformer.runtime.generation.cache import DTYPES
from onnxformer.runtime.manifest import add_variant, load_manifest, variant_record
from onnxformer.runtime.session import create_session

VARIANTS = ("fp16", "int8", "int4")
Progress = Callable[[str], None]
FALLBACK_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "A key value cache keeps the attention state of every token that was already seen.",
)


def quantize_generative(directory: str | Path, variants: Sequence[str] = VARIANTS, *, block_size: int = 32,
                        texts: Sequence[str] | None = None, progress: Progress = lambda _: None) -> dict[str, Any]:
    """Add ``variants`` to a generative artifact; returns the updated manifest."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    if "generation" not in manifest:
        raise QuantizationError(f"{directory} is not a generative artifact; use `onnxformer quantize` for encoders")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise QuantizationError(f"unknown generative variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    texts = list(texts or _evaluation_texts())
    reference = teacher_forced_logits(Generator.load(directory, "fp32", provider="cpu"), texts)
    fp32 = manifest["variants"]["fp32"]
    for name in variants:
        progress(f"{name}: converting")
        start = time.perf_counter()
        made_by = _write_variant(directory, fp32["components"], name, block_size)
        components = {role: f"{name}/{Path(rel).name}" for role, rel in fp32["components"].items()}
        progress(f"{name}: measuring next-token agreement and perplexity")
        sessions = {role: create_session(directory / rel) for role, rel in components.items()}  # just written
        measured = teacher_forced_logits(Generator(directory, manifest, name, sessions), texts)
        record = variant_record(directory, components["decoder"], precision=name,
                                providers=["cuda", "cpu"] if name == "fp16" else ["cpu"],
                                made_by={**made_by, "seconds": round(time.perf_counter() - start, 2)},
                                fidelity=fidelity(reference, measured))
        record["components"] = components
        record["cache_dtype"] = _cache_dtype(sessions)
        manifest = add_variant(directory, name, record)  # one atomic manifest write, fidelity included
    return manifest


def _evaluation_texts() -> list[str]:
    try:
        from onnxformer.quantize.texts import evaluation_texts

        return evaluation_texts()
    except (ImportError, OSError):  # the encoder quantizer's text set is optional for us
        return list(FALLBACK_TEXTS)


def _write_variant(directory: Path, components: dict[str, str], name: str, block_size: int) -> dict[str, Any]:
    """Convert every graph into a temp dir inside the artifact, then move it into place."""
    work = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=directory))
    try:
        for rel in components.values():
            made_by = CONVERTERS[name](confined(directory, rel), work / Path(rel).name, block_size)
        final = directory / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return made_by


def _save(model: Any, out: Path) -> None:
    import onnx

    large = model.ByteSize() > 1_900_000_000  # protobuf's 2 GB limit: weights go to a side file
    onnx.save_model(model, str(out), save_as_external_data=large, location=f"{out.name}.data" if large else None)


def to_fp16(source: Path, out: Path, _block: int) -> dict[str, Any]:
    """ORT's float16 converter; inputs and outputs become fp16 too, so the KV cache is half the size."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=False, disable_shape_infer=False)
    _save(model, out)
    return {"tool": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": False}


def to_int8(source: Path, out: Path, _block: int) -> dict[str, Any]:
    """Dynamic int8: weights int8 per tensor, activations quantized on the fly (MatMulInteger)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}  # types of ops shape inference cannot see
    quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                     extra_options=extra)
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8", "ops": ["MatMul", "Gemm"]}


def to_int4(source: Path, out: Path, block_size: int) -> dict[str, Any]:
    """Weight-only 4-bit: MatMul weights → MatMulNBits, symmetric, one scale per ``block_size`` weights."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), bits=4, block_size=block_size, is_symmetric=True,
                                     accuracy_level=4)
    quantizer.process()
    nodes = sum(n.op_type == "MatMulNBits" for n in quantizer.model.model.graph.node)
    if nodes == 0:
        raise QuantizationError(f"{source.name}: no MatMul weight could be quantized to 4 bits "
                                f"(block size {block_size} must divide the input dimension)")
    _save(quantizer.model.model, out)
    return {"tool": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer", "bits": 4,
            "block_size": block_size, "symmetric": True, "accuracy_level": 4}


CONVERTERS: dict[str, Callable[[Path, Path, int], dict[str, Any]]] = {"fp16": to_fp16, "int8": to_int8,
                                                                     "int4": to_int4}


def _cache_dtype(sessions: dict[str, Any]) -> str:
    session = sessions.get("decoder_with_past", sessions["decoder"])
    past = next(i for i in session.get_inputs() if i.name.startswith("past_key_values."))
    return {"tensor(float)": "float32", "tensor(float16)": "float16"}[past.type]


def teacher_forced_logits(gen: Generator, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(logits (T, V) float32, next-token targets (T,)) per text, each text alone (batch 1)."""
    out = []
    for text in texts:
        prompts = gen.prompts.encode([text], gen.max_positions, True, "positions")
        ids = prompts.ids
        if gen.kind == "decoder":
            logits = decoder_logits(gen.sessions["decoder"], ids)[:-1]
            targets = ids[0, 1:]
        else:  # the source is also the target: the decoder sees start + text[:-1]
            start = np.full((1, 1), gen.start_id, dtype=np.int64)
            decoder_ids = np.concatenate([start, ids[:, :-1]], axis=1)
            logits = seq2seq_logits(gen, ids, decoder_ids)
            targets = ids[0]
        out.append((logits.astype(np.float32), targets))
    return out


def decoder_logits(session: Any, ids: np.ndarray) -> np.ndarray:
    """Logits of every position of one unpadded sequence, run with an empty cache."""
    ones = np.ones_like(ids)
    feeds = {"input_ids": ids, "attention_mask": ones, "position_ids": np.cumsum(ones, axis=1) - 1,
             "logits_to_keep": np.array([0], dtype=np.int64)}  # 0: every position
    for i in session.get_inputs():
        if i.name.startswith("past_key_values."):
            feeds[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=DTYPES[i.type])
    names = {i.name for i in session.get_inputs()}
    return session.run(["logits"], {k: v for k, v in feeds.items() if k in names})[0][0]


def seq2seq_logits(gen: Generator, src: np.ndarray, decoder_ids: np.ndarray) -> np.ndarray:
    mask = np.ones_like(src)
    hidden = gen.sessions["encoder"].run(["last_hidden_state"], {"input_ids": src, "attention_mask": mask})[0]
    feeds = {"input_ids": decoder_ids, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
    return gen.sessions["decoder"].run(["logits"], feeds)[0][0]


def fidelity(reference: list[tuple[np.ndarray, np.ndarray]], variant: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    agree = total = 0
    nll_ref, nll_var = [], []
    for (ref, targets), (got, _) in zip(reference, variant):
        agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
        total += len(targets)
        nll_ref.append(_nll(ref, targets))
        nll_var.append(_nll(got, targets))
    ppl_ref = float(np.exp(np.concatenate(nll_ref).mean()))
    ppl_var = float(np.exp(np.concatenate(nll_var).mean()))
    return {"reference": "fp32", "texts": len(reference), "positions": total,
            "next_token_agreement": agree / total, "perplexity": ppl_var, "perplexity_fp32": ppl_ref,
            "perplexity_delta": ppl_var / ppl_ref - 1.0}


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -log_probs[np.arange(len(targets)), targets]

