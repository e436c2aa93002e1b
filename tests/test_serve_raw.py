"""A `raw` artifact (a plain PyTorch module, no tokenizer) served over KServe v2 raw tensors, checked against PyTorch."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from devkit.servers import running_server
from onnxformer.runtime import Model

pytestmark = pytest.mark.timeout(120)

WIDTH, HIDDEN = 8, 4


def _module():
    import torch

    class Head(torch.nn.Module):
        """Linear + GELU on a float (B, 8) tensor; two outputs of different dtypes."""

        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(WIDTH, HIDDEN)

        def forward(self, x):
            hidden = torch.nn.functional.gelu(self.linear(x))
            return hidden, hidden.argmax(dim=-1)

    torch.manual_seed(0)
    return Head().eval()


def _reference(module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.inference_mode():
        hidden, best = module(torch.from_numpy(x))
    return hidden.numpy(), best.numpy()


@pytest.fixture(scope="module")
def head():
    return _module()


@pytest.fixture(scope="module")
def raw_artifact(head, tmp_path_factory):
    from onnxformer.export import export_module

    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("raw") / "head"
    export_module(head, {"x": rng.standard_normal((2, WIDTH), dtype=np.float32)}, out,
                  output_names=["hidden", "best"],
                  dynamic_axes={"x": {0: "batch"}, "hidden": {0: "batch"}, "best": {0: "batch"}},
                  validation_inputs=[{"x": rng.standard_normal((5, WIDTH), dtype=np.float32)}], name="head")
    return out


@pytest.fixture(scope="module")
def served(raw_artifact):
    model = Model.load(raw_artifact)
    assert model.tokenizer is None and model.task == "raw"
    with running_server(lambda: model, max_texts=16) as url:  # ready: the warm-up ran on zeros of the inputs
        yield model, url


def _infer(url: str, name: str, inputs: list[dict], **extra) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{name}/infer", json={"inputs": inputs, **extra}, timeout=30)


def _x(rows: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, WIDTH), dtype=np.float32)


def test_json_tensors_match_pytorch(head, served):
    _, url = served
    x = _x(3)
    r = _infer(url, "head", [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
               id="req-1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "head" and body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert [(o["datatype"], o["shape"]) for o in body["outputs"]] == [("FP32", [3, HIDDEN]), ("INT64", [3])]
    hidden, best = _reference(head, x)
    got = np.array(outputs["hidden"]["data"], dtype=np.float32).reshape(outputs["hidden"]["shape"])
    assert np.allclose(got, hidden, atol=1e-5)
    assert outputs["best"]["data"] == best.tolist()


def test_tritonclient_binary_tensors_match_pytorch(head, served):
    import tritonclient.http as triton

    _, url = served
    x = _x(5, seed=2)
    t = triton.InferInput("x", list(x.shape), "FP32")
    t.set_data_from_numpy(x)  # binary by default
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_model_ready("head")
    result = client.infer("head", [t], outputs=[triton.InferRequestedOutput("hidden"),
                                                triton.InferRequestedOutput("best", binary_data=False)])
    hidden, best = _reference(head, x)
    assert result.as_numpy("hidden").dtype == np.float32 and np.allclose(result.as_numpy("hidden"), hidden, atol=1e-5)
    assert result.as_numpy("best").dtype == np.int64 and result.as_numpy("best").tolist() == best.tolist()


def test_metadata_lists_the_raw_tensors(served):
    _, url = served
    meta = httpx.get(f"{url}/v2/models/head").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, WIDTH]}]  # no "text" input
    assert meta["outputs"] == [{"name": "hidden", "datatype": "FP32", "shape": [-1, HIDDEN]},
                               {"name": "best", "datatype": "INT64", "shape": [-1]}]
    assert meta["parameters"]["task"] == "raw"


def test_text_routes_refuse_a_raw_model_cleanly(served):
    _, url = served
    r = httpx.post(f"{url}/v1/embeddings", json={"input": ["hello"]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "feature-extraction" in error["message"] and "raw" in error["message"] and error["code"] == 400
    assert error["type"] == "invalid_request_error" and "Traceback" not in r.text
    text = _infer(url, "head", [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}])
    assert text.status_code == 400 and "raw tensors" in text.json()["error"]


@pytest.mark.parametrize(("tensor", "status", "words"), [
    ({"datatype": "INT64", "shape": [1, WIDTH], "data": [1] * WIDTH}, 400, "must be FP32"),
    ({"datatype": "FP32", "shape": [2, WIDTH - 1], "data": [0.5] * (2 * WIDTH - 2)}, 400, f"[batch, {WIDTH}]"),
    ({"datatype": "FP32", "shape": [WIDTH], "data": [0.5] * WIDTH}, 400, f"[batch, {WIDTH}]"),
    ({"datatype": "FP32", "shape": [17, WIDTH], "data": [0.5] * (17 * WIDTH)}, 413, "the limit is 16"),
])
def test_bad_raw_tensors_get_their_status(served, tensor, status, words):
    _, url = served
    r = _infer(url, "head", [dict(tensor, name="x")])
    assert r.status_code == status, r.text
    assert words in r.json()["error"] and "Traceback" not in r.text


def test_cli_serves_a_raw_artifact(head, raw_artifact):
    """`onnxformer serve DIR` itself (its loader dispatch and warm-up), answering raw tensors."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from devkit.servers import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "onnxformer", "serve", str(raw_artifact), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ""})
    try:
        deadline = time.monotonic() + 60
        while not _ready(url):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        x = _x(2, seed=3)
        body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, WIDTH],
                                       "data": x.ravel().tolist()}]})
        r = httpx.post(f"{url}/v2/models/head/infer", content=body, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert r.status_code == 200, r.text
    got = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}
    hidden, best = _reference(head, x)
    assert np.allclose(got["hidden"], hidden, atol=1e-5) and got["best"].tolist() == best.tolist()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready").status_code == 200
    except httpx.HTTPError:
        return False
