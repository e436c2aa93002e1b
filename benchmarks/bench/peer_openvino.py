"""OpenVINO as a peer (issue 15), run in the openvino environment (peer_env.py) by file path:
``python peer_openvino.py SPEC.json`` (protocol: peer_common.py). Imports numpy, openvino, nncf and tokenizers only.

The model is our own fp32 ONNX (the artifact's ``fp32/model.onnx``) read by ``openvino.convert_model``, so the
graph and its inputs are the ones every other configuration gets. fp32: that model compiled for the CPU with
``INFERENCE_PRECISION_HINT=f32`` (OpenVINO otherwise runs bf16 on CPUs with AVX-512-BF16/AMX). int8: NNCF
post-training quantization of weights *and activations* (``nncf.quantize``, ``ModelType.TRANSFORMER``) calibrated
on the same texts, tokenized the same way, as our int8 (quantize/data/calibration.txt, one text per call); it is
compiled with the same f32 hint, so only what NNCF quantized runs in int8. Both: the LATENCY hint (one stream)
with ``threads`` inference threads. End-to-end calls tokenize with the artifact's tokenizer.json.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # run by path: peer_common sits next to this file
from peer_common import Loaded, finish, main


def _xml(spec: dict[str, Any]) -> Path:
    return Path(spec["workdir"]) / "openvino" / spec["precision"] / "model.xml"


def prepare(spec: dict[str, Any]) -> None:
    import openvino as ov

    out = _xml(spec)
    if out.is_file():
        return
    model = ov.convert_model(spec["fp32_onnx"])
    if spec["precision"] == "int8":
        import nncf

        with np.load(spec["calibration"]) as z:
            samples = [{k.split("/", 1)[1]: z[k] for k in z.files if k.split("/", 1)[0] == str(i)}
                       for i in range(spec["calibration_count"])]
        model = nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(samples))
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out), compress_to_fp16=False)  # the default would store fp16 weights


def load(spec: dict[str, Any]) -> Loaded:
    import openvino as ov
    from tokenizers import Tokenizer

    path = _xml(spec)
    compiled = ov.Core().compile_model(str(path), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": spec["threads"], "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    outputs = [(o, o.get_any_name()) for o in compiled.outputs if o.get_any_name() in spec["output_names"]]
    inputs = spec["input_names"]
    tokenizer = Tokenizer.from_file(spec["tokenizer"])
    tokenizer.enable_truncation(spec["max_length"])
    tokenizer.enable_padding(pad_id=spec["pad_id"])

    def model_only(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = request.infer({k: feeds[k] for k in inputs})
        return {name: np.array(result[o]) for o, name in outputs}

    def end_to_end(texts: list[str]) -> np.ndarray:
        enc = tokenizer.encode_batch(texts)
        feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                 "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}
        return finish(model_only(feeds), feeds["attention_mask"], spec)

    size = float(path.stat().st_size + path.with_suffix(".bin").stat().st_size)
    return Loaded(model_only, end_to_end, size)


if __name__ == "__main__":
    main(prepare, load)
