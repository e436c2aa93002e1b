"""sentence-transformers' own ONNX route as a peer, run in the optimum environment (peer_env.py; its ONNX backend
exports through optimum): ``python peer_sentence_transformers.py SPEC.json`` (protocol: peer_common.py).

``SentenceTransformer(source, backend="onnx")`` exports the checkpoint, then
``export_dynamic_quantized_onnx_model`` quantizes it with the CPU preset for this CPU (avx512_vnni, else avx2),
as sentence-transformers' efficiency guide does. Model-only calls go to the ORTModel inside (the same feeds as
every configuration); end-to-end calls are ``model.encode`` (its tokenizer, pooling and normalisation).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # run by path: peer_common sits next to this file
from peer_common import Loaded, main, session_options

FOLDER = Path("sentence-transformers")


def _preset(spec: dict[str, Any]) -> str:
    return "avx512_vnni" if spec["avx512_vnni"] else "avx2"


def _file(spec: dict[str, Any]) -> str:
    return f"onnx/model_qint8_{_preset(spec)}.onnx"


def prepare(spec: dict[str, Any]) -> None:
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    folder = Path(spec["workdir"]) / FOLDER
    if not (folder / _file(spec)).is_file():
        model = SentenceTransformer(spec["source"], device="cpu", backend="onnx", local_files_only=True)
        model.save_pretrained(str(folder))
        export_dynamic_quantized_onnx_model(model, _preset(spec), str(folder))


def load(spec: dict[str, Any]) -> Loaded:
    from sentence_transformers import SentenceTransformer

    folder = Path(spec["workdir"]) / FOLDER
    model = SentenceTransformer(str(folder), device="cpu", backend="onnx", local_files_only=True, model_kwargs={
        "file_name": _file(spec), "provider": "CPUExecutionProvider",
        "session_options": session_options(spec["threads"])})
    ort_model = model[0].auto_model
    inputs = [k for k in spec["input_names"]]

    def model_only(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = ort_model(**{k: feeds[k] for k in inputs})  # type: ignore[operator]  # an ORTModel, typed as a Module
        return {"last_hidden_state": np.asarray(out["last_hidden_state"])}

    def end_to_end(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=len(texts), convert_to_numpy=True)

    return Loaded(model_only, end_to_end, float((folder / _file(spec)).stat().st_size))


if __name__ == "__main__":
    main(prepare, load)
