"""optimum's ORTModel peer, run in the optimum environment (peer_env.py) by file path:
``python peer_optimum.py SPEC.json`` (protocol: peer_common.py). Imports numpy, onnxruntime, transformers' tokenizer
and optimum only.

fp32: optimum's own export of the source checkpoint (``ORTModelFor*.from_pretrained(export=True)``). int8: its
dynamic quantization of that export with optimum's documented CPU preset for this CPU's instruction set
(``AutoQuantizationConfig.avx512_vnni`` where the CPU has AVX-512 VNNI, else ``avx2``; per-tensor weights), made
once per benchmark run in the peers' work directory.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # run by path: peer_common sits next to this file
from peer_common import Loaded, finish, main, session_options

FILES = {"fp32": Path("optimum") / "fp32" / "model.onnx", "int8": Path("optimum") / "int8" / "model_quantized.onnx"}


def prepare(spec: dict[str, Any]) -> None:
    import optimum.onnxruntime as ort_optimum

    work = Path(spec["workdir"])
    fp32 = work / FILES["fp32"]
    if not fp32.is_file():
        model = getattr(ort_optimum, spec["optimum_class"]).from_pretrained(spec["source"], export=True)
        model.save_pretrained(fp32.parent)
    if spec["precision"] == "int8" and not (work / FILES["int8"]).is_file():
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        factory = AutoQuantizationConfig.avx512_vnni if spec["avx512_vnni"] else AutoQuantizationConfig.avx2
        ort_optimum.ORTQuantizer.from_pretrained(fp32.parent).quantize(
            factory(is_static=False, per_channel=False), save_dir=(work / FILES["int8"]).parent)


def load(spec: dict[str, Any]) -> Loaded:
    import optimum.onnxruntime as ort_optimum
    from transformers import AutoTokenizer

    path = Path(spec["workdir"]) / FILES[spec["precision"]]
    model = getattr(ort_optimum, spec["optimum_class"]).from_pretrained(
        path.parent, file_name=path.name, session_options=session_options(spec["threads"]),
        provider="CPUExecutionProvider")
    tokenizer = AutoTokenizer.from_pretrained(spec["source"], local_files_only=True)
    inputs, outputs = spec["input_names"], spec["output_names"]

    def model_only(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = model(**{k: feeds[k] for k in inputs})
        return {k: np.asarray(out[k]) for k in outputs}

    def end_to_end(texts: list[str]) -> np.ndarray:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=spec["max_length"], return_tensors="np")
        return finish(model_only(dict(enc)), enc["attention_mask"], spec)

    return Loaded(model_only, end_to_end, float(path.stat().st_size))


if __name__ == "__main__":
    main(prepare, load)
