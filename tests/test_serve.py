"""The HTTP server, for real: uvicorn on a free loopback port, spoken to by tritonclient, httpx and threads."""
from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from devkit.servers import Gate, running_server
from onnxformer.runtime import Model

pytestmark = pytest.mark.timeout(120)

TEXTS = ["The cat sat on the mat.", "A quick brown fox jumps over the lazy dog near the river bank.",
         "hello", "Serving models over HTTP with dynamic batching.", "ONNX Runtime on two cores"]


@pytest.fixture(scope="module")
def minilm(minilm_artifact):
    model = Model.load(minilm_artifact)
    with running_server(lambda: model) as url:
        yield model, url


@pytest.fixture(scope="module")
def tiny_model(tiny_artifact):
    return Model.load(tiny_artifact("bert", "feature-extraction"))


@pytest.fixture(scope="module")
def tiny(tiny_model):
    with running_server(lambda: tiny_model, max_texts=8, max_body_bytes=4096, max_tokens_per_text=24) as url:
        yield tiny_model, url


# --- protocol parity ---------------------------------------------------------------------------------
def test_tritonclient_text_infer_matches_runtime(minilm):
    import tritonclient.http as triton

    model, url = minilm
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    name = model.manifest.name
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
    text = triton.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_))  # binary by default
    expected = model.embed(TEXTS)
    for binary in (True, False):
        out = triton.InferRequestedOutput("embedding", binary_data=binary)
        got = client.infer(name, [text], outputs=[out]).as_numpy("embedding")
        assert got.shape == (len(TEXTS), 384)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_tritonclient_raw_tensors_match_runtime(minilm):
    import tritonclient.http as triton

    model, url = minilm
    feeds = model.tokenizer.encode(TEXTS[:2]).feeds
    inputs = []
    for name, array in feeds.items():
        t = triton.InferInput(name, list(array.shape), "INT64")
        t.set_data_from_numpy(array, binary_data=name != "input_ids")  # mixed JSON and binary inputs
        inputs.append(t)
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    got = client.infer(model.manifest.name, inputs).as_numpy("last_hidden_state")
    np.testing.assert_allclose(got, model.run(feeds)["last_hidden_state"], atol=1e-5)


def test_openai_embeddings_match_runtime(minilm):
    model, url = minilm
    r = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS, "model": model.manifest.name})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == model.manifest.name
    assert [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
    np.testing.assert_allclose(np.array([d["embedding"] for d in body["data"]]), model.embed(TEXTS), atol=1e-5)
    assert body["usage"]["prompt_tokens"] == sum(model.tokenizer.count_tokens(TEXTS))
    single = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS[0], "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(single["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, model.embed(TEXTS[:1])[0], atol=1e-5)


def test_token_id_embeddings_and_langchain_openai_embeddings(minilm):
    """OpenAI's token-id input (what LangChain's OpenAIEmbeddings sends by default) is the model's own ids, used as
    given; OpenAIEmbeddings(check_embedding_ctx_length=False) sends text."""
    import openai
    from langchain_openai import OpenAIEmbeddings

    model, url = minilm
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    ids = [e.ids for e in model.tokenizer.encodings(TEXTS[:2])]  # [CLS] ... [SEP], as the tokenizer makes them
    r = client.embeddings.create(model=model.manifest.name, input=ids)  # the client asks for base64
    np.testing.assert_allclose(np.array([d.embedding for d in r.data]), model.embed(TEXTS[:2]), atol=1e-5)
    assert r.usage.prompt_tokens == sum(map(len, ids))
    one = client.embeddings.create(model=model.manifest.name, input=ids[0]).data[0].embedding
    np.testing.assert_allclose(one, model.embed(TEXTS[:1])[0], atol=1e-5)
    with pytest.raises(openai.BadRequestError, match="vocabulary is 0..30521"):
        client.embeddings.create(model=model.manifest.name, input=[[101, 30522, 102]])
    lc = OpenAIEmbeddings(model=model.manifest.name, base_url=f"{url}/v1", api_key="unused", max_retries=0,
                          check_embedding_ctx_length=False)
    np.testing.assert_allclose(lc.embed_documents(TEXTS), model.embed(TEXTS), atol=1e-5)
    np.testing.assert_allclose(lc.embed_query(TEXTS[0]), model.embed(TEXTS[:1])[0], atol=1e-5)


def test_openai_embeddings_dimensions_are_matryoshka(minilm):
    """`dimensions` (OpenAI's field) cuts each vector to its first components and renormalises it."""
    model, url = minilm
    r = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS, "dimensions": 32})
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in r.json()["data"]])
    assert got.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(got, model.embed(TEXTS, dimensions=32), atol=1e-5)


def test_health_and_metadata(tiny):
    model, url = tiny
    name = model.manifest.name
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{url}/v2/models/{name}").json()
    assert meta["name"] == name and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == ["text"] + model.input_names
    assert [o["name"] for o in meta["outputs"]] == ["embedding", "last_hidden_state"]
    assert httpx.get(f"{url}/v2/models/{name}/ready").json()["ready"] is True
    assert httpx.get(f"{url}/v2/models/{name}/versions/1").status_code == 200
    assert httpx.get(f"{url}/v2/models/{name}/versions/2").status_code == 404


# --- dynamic batching under load ---------------------------------------------------------------------
def test_64_concurrent_clients_match_serial(tiny_model):
    texts = [f"request {i}: " + " ".join(["word"] * (i % 13)) for i in range(40)]
    serial = {t: tiny_model.embed([t])[0] for t in texts}

    def client(worker: int, url: str) -> list[tuple[str, int, list[float] | None]]:
        out = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for j in range(20):
                text = texts[(worker * 7 + j) % len(texts)]
                r = http.post("/v1/embeddings", json={"input": [text]})
                out.append((text, r.status_code, r.json()["data"][0]["embedding"] if r.status_code == 200 else None))
        return out

    with running_server(lambda: tiny_model) as url:
        with ThreadPoolExecutor(64) as pool:
            results = [r for f in [pool.submit(client, w, url) for w in range(64)] for r in f.result()]
        metrics = httpx.get(f"{url}/metrics").text
    assert len(results) == 64 * 20
    assert [s for _, s, _ in results if s != 200] == []
    for text, _, vector in results:
        np.testing.assert_allclose(vector, serial[text], atol=1e-5)
    calls = _metric(metrics, 'onnxformer_batch_size_count{lane="embed"}')
    assert calls < len(results), "requests were never merged into shared model calls"


def _metric(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


# --- limits ------------------------------------------------------------------------------------------
def test_full_queue_answers_429_at_once(tiny_artifact):
    model = Model.load(tiny_artifact("bert", "feature-extraction"))
    gate = model.embed_encodings = Gate(model.embed_encodings)  # the server hands it its encodings
    gate.release.set()  # let the warm-up and readiness through, then hold the worker
    with running_server(lambda: model, max_queue=2) as url:
        gate.release.clear()
        gate.entered.clear()
        with ThreadPoolExecutor(3) as pool:
            running = pool.submit(httpx.post, f"{url}/v1/embeddings", json={"input": ["busy"]}, timeout=30)
            assert gate.entered.wait(10)
            queued = [pool.submit(httpx.post, f"{url}/v1/embeddings", json={"input": [f"q{i}"]}, timeout=30)
                      for i in range(2)]
            _until(lambda: "onnxformer_queue_depth 2.0" in httpx.get(f"{url}/metrics").text)
            start = time.perf_counter()
            rejected = httpx.post(f"{url}/v1/embeddings", json={"input": ["one too many"]}, timeout=5)
            elapsed = time.perf_counter() - start
            gate.release.set()
            statuses = [running.result().status_code] + [f.result().status_code for f in queued]
    assert rejected.status_code == 429 and elapsed < 1.0
    assert rejected.headers["retry-after"] == "1"
    assert "busy" in rejected.json()["error"]["message"]
    assert statuses == [200, 200, 200]


def test_timeout_gives_504(tiny_artifact):
    model = Model.load(tiny_artifact("bert", "feature-extraction"))
    gate = model.embed_encodings = Gate(model.embed_encodings)  # the server hands it its encodings
    gate.release.set()
    # the gate holds "slow" past any timeout; "fast again" gets 1 s, room for a stall on a shared machine
    with running_server(lambda: model, timeout_s=1.0) as url:
        gate.release.clear()
        r = httpx.post(f"{url}/v1/embeddings", json={"input": ["slow"]}, timeout=10)
        gate.release.set()
        assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]
        assert httpx.post(f"{url}/v1/embeddings", json={"input": ["fast again"]}).status_code == 200


def test_not_ready_gives_503_until_loaded(tiny_artifact):
    loaded = threading.Event()

    def slow_load() -> Model:
        assert loaded.wait(30)
        return Model.load(tiny_artifact("bert", "feature-extraction"))

    with running_server(slow_load, wait_ready=False) as url:
        assert httpx.get(f"{url}/v2/health/live").status_code == 200
        assert httpx.get(f"{url}/v2/health/ready").status_code == 503
        r = httpx.post(f"{url}/v1/embeddings", json={"input": ["x"]})
        assert r.status_code == 503 and "loading" in r.json()["error"]["message"]
        assert httpx.post(f"{url}/v2/models/any/infer", content=b"{}").status_code == 503
        loaded.set()
        _until(lambda: httpx.get(f"{url}/v2/health/ready").status_code == 200)
        assert httpx.post(f"{url}/v1/embeddings", json={"input": ["x"]}).status_code == 200


def _until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.02)


def _v2(inputs: list[dict]) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


TEXT = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}
IDS = {"datatype": "INT64", "shape": [1, 3], "data": [101, 7592, 102]}
RAW = [dict(IDS, name=n) for n in ("input_ids", "attention_mask", "token_type_ids")]
BAD = {
    # name: (path, body, status, words in the message)
    "malformed json v2": ("infer", b'{"inputs": [', 400, "not valid JSON"),
    "malformed json v1": ("/v1/embeddings", b'{"input": ', 400, "Invalid JSON"),
    "no inputs": ("infer", _v2([]), 400, "non-empty"),
    "unknown datatype": ("infer", _v2([dict(TEXT, datatype="STRING")]), 400, "unknown datatype"),
    "text not bytes": ("infer", _v2([dict(TEXT, datatype="FP32", data=[1.0])]), 400, "must be BYTES"),
    "data vs shape": ("infer", _v2([dict(TEXT, shape=[2])]), 400, "needs 2 elements"),
    "text rank": ("infer", _v2([dict(TEXT, shape=[1, 1, 1])]), 400, "shape [N]"),
    "negative dim": ("infer", _v2([dict(TEXT, shape=[-1])]), 400, "non-negative"),
    "raw missing input": ("infer", _v2(RAW[:2]), 400, "do not match"),
    "raw float ids": ("infer", _v2([dict(RAW[0], datatype="FP32", data=[1.0, 2.0, 3.0])] + RAW[1:]), 400, "INT64"),
    "raw rank": ("infer", _v2([dict(r, shape=[3]) for r in RAW]), 400, "[batch, sequence]"),
    "raw vocab": ("infer", _v2([dict(RAW[0], data=[1, 2, 10**9])] + RAW[1:]), 400, "vocabulary"),
    "raw too long": ("infer", _v2([dict(r, shape=[1, 30], data=[1] * 30) for r in RAW]), 422, "over the limit"),
    "text and raw": ("infer", _v2([TEXT] + RAW), 400, "not both"),
    "empty string": ("/v1/embeddings", b'{"input": [""]}', 400, "empty string"),
    "not a string": ("/v1/embeddings", b'{"input": [3.5]}', 400, "input"),
    "mixed input": ("/v1/embeddings", b'{"input": ["a", 3]}', 400, "input"),
    "token id past vocab": ("/v1/embeddings", b'{"input": [[101, 1000000000]]}', 400, "vocabulary"),
    "negative token id": ("/v1/embeddings", b'{"input": [-1]}', 400, "not a token id"),
    "empty token ids": ("/v1/embeddings", b'{"input": [[]]}', 400, "empty"),
    "too many token ids": ("/v1/embeddings", json.dumps({"input": [[5] * 30]}).encode(), 422, "limit is 24"),
    "prompt with ids": ("/v1/embeddings", b'{"input": [[5]], "prompt": "query: "}', 400, "token-id input"),
    "empty list": ("/v1/embeddings", b'{"input": []}', 400, "empty list"),
    "too many texts": ("/v1/embeddings", json.dumps({"input": ["a"] * 9}).encode(), 413, "limit is 8"),
    "too many tokens": ("/v1/embeddings", json.dumps({"input": ["word " * 40]}).encode(), 422, "limit is 24"),
    "body too large": ("/v1/embeddings", json.dumps({"input": ["x" * 5000]}).encode(), 413, "limit"),
    "wrong dimensions": ("/v1/embeddings", b'{"input": ["a"], "dimensions": 7000}', 400, "dimensions=7000"),
    "unknown model v1": ("/v1/embeddings", b'{"input": ["a"], "model": "nope"}', 404, "unknown model"),
    "unknown model v2": ("/v2/models/nope/infer", _v2([TEXT]), 404, "unknown model"),
    "wrong task": ("/v1/classify", b'{"inputs": ["a"]}', 400, "text-classification model"),
    "unknown route": ("/v3/nothing", b"{}", 404, "Not Found"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_gets_its_status_and_no_trace(tiny, case):
    model, url = tiny
    path, body, status, words = BAD[case]
    if path == "infer":
        path = f"/v2/models/{model.manifest.name}/infer"
    r = httpx.post(f"{url}{path}", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert words in message
    assert "Traceback" not in r.text and 'File "' not in r.text


def test_chunked_body_over_limit_is_413(tiny):
    _, url = tiny
    chunks = (b'{"input": ["' + b"x" * 1000 + b'"' if i == 0 else b" " * 1000 for i in range(6))
    r = httpx.post(f"{url}/v1/embeddings", content=chunks)  # a generator body: no content-length
    assert r.status_code == 413


def test_server_survives_bad_requests(tiny):
    model, url = tiny
    assert httpx.post(f"{url}/v1/embeddings", content=b"\xff\xfe garbage").status_code == 400
    r = httpx.post(f"{url}/v1/embeddings", json={"input": ["still fine"]})
    np.testing.assert_allclose(r.json()["data"][0]["embedding"], model.embed(["still fine"])[0], atol=1e-5)


def test_classification_model_endpoints(tiny_artifact):
    import tritonclient.http as triton

    model = Model.load(tiny_artifact("bert", "text-classification"))
    with running_server(lambda: model) as url:
        name = model.manifest.name
        text = triton.InferInput("text", [2, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"good"], [b"bad"]], dtype=np.object_))
        result = triton.InferenceServerClient(url.removeprefix("http://")).infer(name, [text])
        logits = model.run(model.tokenizer.encode(["good", "bad"]).feeds)["logits"]
        np.testing.assert_allclose(result.as_numpy("logits"), logits, atol=1e-5)
        id2label = model.manifest.postprocess.id2label
        assert [v.decode() for v in result.as_numpy("label")] == [id2label[str(i)] for i in logits.argmax(1)]
        r = httpx.post(f"{url}/v1/embeddings", json={"input": ["a"]})
        assert r.status_code == 400 and "feature-extraction" in r.json()["error"]["message"]
        r = httpx.post(f"{url}/v1/classify", json={"inputs": ["good", "bad"]})
        if hasattr(Model, "classify"):
            assert r.status_code == 200 and len(r.json()["results"]) == 2, r.text
        else:
            assert r.status_code == 501 and "classify" in r.json()["error"]["message"]


def test_api_key(tiny_model):
    key = "s3cret-key-for-tests"
    with running_server(lambda: tiny_model, api_key=key) as url:
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200  # probes stay open
        assert httpx.post(f"{url}/v1/embeddings", json={"input": ["a"]}).status_code == 401
        wrong = httpx.post(f"{url}/v1/embeddings", json={"input": ["a"]}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        ok = httpx.post(f"{url}/v1/embeddings", json={"input": ["a"]}, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        assert httpx.get(f"{url}/metrics", headers={"X-API-Key": key}).status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 401


def test_metrics_are_prometheus_text(tiny):
    model, url = tiny
    httpx.post(f"{url}/v1/embeddings", json={"input": ["count me"]})
    httpx.post(f"{url}/v1/embeddings", content=b"{")
    r = httpx.get(f"{url}/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'onnxformer_requests_total{route="/v1/embeddings",status="200"}' in text
    assert 'onnxformer_requests_total{route="/v1/embeddings",status="400"}' in text
    assert 'onnxformer_request_duration_seconds_bucket{le="0.005",route="/v1/embeddings"}' in text
    assert _metric(text, 'onnxformer_batch_size_count{lane="embed"}') >= 1
    assert "onnxformer_queue_depth 0.0" in text


def test_graceful_shutdown_finishes_in_flight_requests(tiny_artifact):
    """SIGTERM the real CLI process while requests wait in a batch: every one of them still succeeds."""
    import os
    import signal
    import subprocess
    import sys

    from devkit.servers import free_port

    directory = tiny_artifact("bert", "feature-extraction")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "onnxformer", "serve", str(directory), "--port", str(port), "--max-delay-ms", "800"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ""})
    try:
        _until(lambda: _ready(url), timeout=60)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(httpx.post, f"{url}/v1/embeddings", json={"input": [f"in flight {i}"]}, timeout=30)
                       for i in range(8)]
            time.sleep(0.3)  # all eight are now waiting for the 800 ms batch window
            proc.send_signal(signal.SIGTERM)
            responses = [f.result() for f in futures]
        code = proc.wait(timeout=30)
        log = proc.stderr.read().decode()
        # uvicorn re-raises the signal once shutdown is complete, so the parent sees a SIGTERM death
        assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in log, log[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [r.status_code for r in responses] == [200] * 8
    model = Model.load(directory)
    for i, r in enumerate(responses):
        np.testing.assert_allclose(r.json()["data"][0]["embedding"], model.embed([f"in flight {i}"])[0], atol=1e-5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/health/live")


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready").status_code == 200
    except httpx.HTTPError:
        return False


def test_tag_and_answer_endpoints_match_runtime(tiny_artifact):
    tagger = Model.load(tiny_artifact("bert", "token-classification"))
    with running_server(lambda: tagger) as url:
        texts = ["Alice lives in Paris", "Bob visited Berlin"]
        r = httpx.post(f"{url}/v1/tag", json={"inputs": texts, "aggregation": "first"})
        assert r.status_code == 200, r.text
        assert r.json()["results"] == json.loads(json.dumps(tagger.tag(texts, aggregation="first")))
        bad = httpx.post(f"{url}/v1/tag", json={"inputs": texts, "aggregation": "bogus"})
        assert bad.status_code == 400 and "Traceback" not in bad.text
        assert httpx.post(f"{url}/v1/answer", json={"inputs": []}).status_code == 400
    reader = Model.load(tiny_artifact("bert", "question-answering"))
    with running_server(lambda: reader) as url:
        pairs = [{"question": "Where does Alice live?", "context": "Alice lives in Paris with her cat."}]
        r = httpx.post(f"{url}/v1/answer", json={"inputs": pairs})
        assert r.status_code == 200, r.text
        expected = reader.answer(pairs[0]["question"], pairs[0]["context"])
        assert r.json()["results"] == [json.loads(json.dumps(expected))]
        assert httpx.post(f"{url}/v1/tag", json={"inputs": ["x"]}).status_code == 400


def test_truncate_flag_cuts_instead_of_refusing(tiny_model):
    """--truncate (TEI's auto-truncate): an over-long text is cut to the model's limit instead of a 422."""
    long = "word " * 5000
    with running_server(lambda: tiny_model, truncate=True) as url:
        r = httpx.post(f"{url}/v1/embeddings", json={"input": [long, "short"]})
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]])
    np.testing.assert_allclose(got, tiny_model.embed([long, "short"], truncate=True), atol=1e-5)
    with running_server(lambda: tiny_model) as url:
        assert httpx.post(f"{url}/v1/embeddings", json={"input": [long]}).status_code == 422


def test_docs_flag_serves_the_openapi_description(tiny_model):
    with running_server(lambda: tiny_model) as url:
        assert httpx.get(f"{url}/openapi.json").status_code == 404
    with running_server(lambda: tiny_model, docs=True) as url:
        spec = httpx.get(f"{url}/openapi.json").json()
        assert "/v1/embeddings" in spec["paths"] and httpx.get(f"{url}/docs").status_code == 200


def test_truncate_flag_reaches_classification_too(tiny_artifact):
    """--truncate cuts in the model call as well as at admission: an over-long text is classified, not refused."""
    classifier = Model.load(tiny_artifact("bert", "text-classification"))
    long = "word " * 5000
    with running_server(lambda: classifier, truncate=True) as url:
        r = httpx.post(f"{url}/v1/classify", json={"inputs": [long, "short"]})
        assert r.status_code == 200, r.text
    assert r.json()["results"] == classifier.classify([long, "short"], truncate=True)
