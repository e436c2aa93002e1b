"""`onnxformer triton --backend python` loaded by a real Triton Inference Server (2.51, from the nvidia-pytriton
wheel: `make tritonserver`), queried with tritonclient.http and tritonclient.grpc, against `onnxformer serve`."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from devkit.servers import free_port, running_server
from onnxformer.cli import main
from onnxformer.runtime import Model

TRITON_DIR = Path(os.environ.get("ONNXFORMER_TRITON_DIR", Path(__file__).parents[1] / "build" / "tritonserver"))
BINARY = TRITON_DIR / "server" / "bin" / "tritonserver"
TEXTS = ["ONNX is fast", "Triton batches requests", "a third, longer sentence about serving models at scale"]

pytestmark = pytest.mark.skipif(not BINARY.exists(), reason=f"no tritonserver at {BINARY}: run `make tritonserver` "
                                                              "(unpacks it from the nvidia-pytriton wheel)")


def start_triton(repo: Path, log: Path) -> tuple[subprocess.Popen, int, int]:
    """The command the README gives: tritonserver with the wheel's libraries and backends."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = {**os.environ, "LD_LIBRARY_PATH": str(TRITON_DIR / "libs")}
    cmd = [str(BINARY), f"--model-repository={repo}", f"--backend-directory={TRITON_DIR / 'server' / 'backends'}",
           f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}", "--exit-timeout-secs=10"]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"tritonserver exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{http}/v2/health/ready").status_code == 200:
                return proc, http, grpc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"tritonserver never became ready:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def triton(minilm_artifact, tiny_artifact, tmp_path_factory):
    repo = tmp_path_factory.mktemp("triton") / "models"
    stub = ["--backend", "python", "--python-path", str(TRITON_DIR / "numpy1"), "--threads", "1"]
    assert main(["triton", str(minilm_artifact), "--repo", str(repo), "--name", "minilm", "--max-delay-us", "20000",
                 *stub]) == 0
    classifier = tiny_artifact("bert", "text-classification")
    assert main(["triton", str(classifier), "--repo", str(repo), "--name", "clf", *stub]) == 0
    log = repo.parent / "tritonserver.log"
    proc, http, grpc = start_triton(repo, log)
    opened: list = []
    yield {"http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}", "classifier": classifier, "clients": opened}
    for client in opened:  # Triton waits for open connections before it exits
        client.close()
    proc.terminate()
    assert proc.wait(timeout=30) == 0, log.read_text()[-2000:]


def _client(triton, module, **options):
    client = module.InferenceServerClient(triton["grpc" if "grpc" in module.__name__ else "http"], **options)
    triton["clients"].append(client)
    return client


def _text_input(module, texts: list[str], name: str = "text"):
    t = module.InferInput(name, [len(texts), 1], "BYTES")
    t.set_data_from_numpy(np.array([[s.encode()] for s in texts], dtype=np.object_))
    return t


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_same_vectors_as_onnxformer_serve(triton, minilm_artifact):
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    with running_server(lambda: Model.load(minilm_artifact, variant="fp32")) as url:
        data = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS}).json()["data"]
    served = np.array([d["embedding"] for d in data])
    for module in (thttp, tgrpc):
        client = _client(triton, module)
        got = client.infer("minilm", [_text_input(module, TEXTS)]).as_numpy("embedding")
        assert got.shape == (3, 384) and got.dtype == np.float32
        assert _cosine(got, served).min() >= 0.99999


def test_requests_are_merged_by_triton(triton):
    import tritonclient.http as thttp

    client = _client(triton, thttp, concurrency=16)
    before = client.get_inference_statistics("minilm")["model_stats"][0]
    futures = [client.async_infer("minilm", [_text_input(thttp, [f"text number {i}"])]) for i in range(32)]
    vectors = [f.get_result().as_numpy("embedding") for f in futures]
    assert all(v.shape == (1, 384) for v in vectors)
    deadline = time.monotonic() + 10  # Triton counts a request after its response is sent
    while (after := client.get_inference_statistics("minilm")["model_stats"][0])["inference_count"] \
            < before["inference_count"] + 32 and time.monotonic() < deadline:
        time.sleep(0.05)
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 32 and executions < inferences  # Triton's dynamic batcher merged requests
    batch_sizes = {b["batch_size"] for b in after["batch_stats"]}
    assert max(batch_sizes) > 1


def test_a_malformed_request_is_a_triton_error(triton):
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp
    from tritonclient.utils import InferenceServerException

    client = _client(triton, thttp)
    bad = thttp.InferInput("text", [1, 1], "BYTES")
    bad.set_data_from_numpy(np.array([[b"\xff\xfe not utf-8"]], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="not valid UTF-8"):
        client.infer("minilm", [bad])
    with pytest.raises(InferenceServerException, match="too long|tokens"):
        client.infer("minilm", [_text_input(thttp, ["word " * 2000])])
    with pytest.raises(InferenceServerException, match="unexpected inference input 'ids'|ids"):
        client.infer("minilm", [_text_input(thttp, ["x"], name="ids")])
    # a bad request merged with good ones fails alone, and the model keeps serving
    concurrent = _client(triton, thttp, concurrency=4)
    futures = [concurrent.async_infer("minilm", [_input(t)]) for t in [b"fine", b"\xff", b"also fine", b"ok"]]
    assert [_failed(f) for f in futures] == [False, True, False, False]
    g = _client(triton, tgrpc)
    assert g.infer("minilm", [_text_input(tgrpc, ["still serving"])]).as_numpy("embedding").shape == (1, 384)
    assert g.is_model_ready("minilm")


def _input(raw: bytes):
    import tritonclient.http as thttp

    t = thttp.InferInput("text", [1, 1], "BYTES")
    t.set_data_from_numpy(np.array([[raw]], dtype=np.object_))
    return t


def _failed(future) -> bool:
    from tritonclient.utils import InferenceServerException

    try:
        return future.get_result().as_numpy("embedding").shape != (1, 384)
    except InferenceServerException:
        return True


def test_classifier_labels_and_pair_scores(triton):
    import tritonclient.http as thttp

    model = Model.load(triton["classifier"], variant="fp32")
    client = _client(triton, thttp)
    result = client.infer("clf", [_text_input(thttp, TEXTS)])
    expected = model.classify(TEXTS)
    assert [label[0].decode() for label in result.as_numpy("label")] == [e[0]["label"] for e in expected]
    logits = result.as_numpy("logits")
    assert logits.shape == (3, 3)
    pairs = client.infer("clf", [_text_input(thttp, ["q", "q"]), _text_input(thttp, TEXTS[:2], "text_pair")])
    scores = pairs.as_numpy("score")[:, 0]
    np.testing.assert_allclose(scores, model.relevance([("q", TEXTS[0]), ("q", TEXTS[1])]), atol=1e-5)
