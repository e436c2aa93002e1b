"""Hostile requests against the real server: a seeded few hundred per run, every route. None may get a 5xx, a
body that is not JSON, or stack-trace text; a control request afterwards must give the same embedding."""
from __future__ import annotations

import collections
import re

import httpx
import numpy as np
import pytest

from devkit.fuzz import Generator as Fuzz
from devkit.fuzz import Routes, lying_content_length, problems, send
from devkit.servers import running_server
from onnxformer.runtime import Model
from onnxformer.runtime.generation import Generator

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def minilm(minilm_artifact):
    model = Model.load(minilm_artifact)
    with running_server(lambda: model, body_timeout_s=1.0) as url:
        yield model, url


def _control(url: str) -> np.ndarray:
    r = httpx.post(f"{url}/v1/embeddings", json={"input": ["the control sentence"]})
    assert r.status_code == 200, r.text
    return np.array(r.json()["data"][0]["embedding"])


def _campaign(url: str, routes: Routes, n: int, seed: int) -> collections.Counter:
    seen: collections.Counter = collections.Counter()
    bad = []
    with httpx.Client(timeout=30) as client:
        for req in Fuzz(routes, seed=seed).requests(n):
            r = send(client, url, req)
            seen[(req.route, req.family, r.status_code)] += 1
            found = problems(r.status_code, r.text, r.headers.get("content-type", ""))
            if found:
                bad.append((req.family, req.path, req.body[:120], r.status_code, found, r.text[:200]))
    assert not bad, bad[:5]
    return seen


def test_hostile_requests_never_get_a_5xx_and_leave_the_model_unchanged(minilm):
    model, url = minilm
    before = _control(url)
    seen = _campaign(url, Routes(model.manifest.name), 300, seed=17)
    families = {family for _, family, _ in seen}
    assert {"deep nesting", "wrong types", "unicode", "shape", "tensor values", "lying lengths",
            "path traversal", "oversized"} <= families, families
    np.testing.assert_allclose(_control(url), before, atol=1e-6)
    metrics = httpx.get(f"{url}/metrics").text
    assert re.search(r"^onnxformer_internal_errors_total 0\.0$", metrics, re.M), metrics[-800:]
    assert 'status="500"' not in metrics


def test_hostile_completions(gen_artifact):
    gen = Generator.load(gen_artifact("gpt2"))
    with running_server(lambda: gen) as url:
        seen = _campaign(url, Routes(gen.manifest.name, embeddings=False, completions=True), 150, seed=5)
        assert {s for _, _, s in seen} <= {200, 400, 404, 405, 413, 415, 422}, seen
        r = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 2, "seed": 2 ** 64 - 1,
                                                       "top_k": 10 ** 6, "temperature": 0.5})
        assert r.status_code == 200, r.text  # the edges of the valid ranges are served


@pytest.mark.parametrize("field,value,words", [
    ("seed", -1, "seed"), ("seed", -(2 ** 63), "seed"), ("repetition_penalty", float("inf"), "finite"),
    ("logprobs", 21, "logprobs"), ("echo", "yes", "echo"), ("best_of", 2, "best_of"), ("suffix", "x", "suffix"),
    ("presence_penalty", 2.5, "presence_penalty"), ("frequency_penalty", float("nan"), "frequency_penalty"),
    ("logit_bias", {"-1": 2}, "logit_bias key '-1'"), ("logit_bias", {"1": 101}, "logit_bias"),
    ("stream_options", {"include_usage": 1}, "stream_options"), ("bogus", 1, "bogus"),
])
def test_completion_parameters_refused_by_name(gen_artifact, field, value, words):
    import json

    from onnxformer.serve.schemas import CompletionRequest, parse_body
    from onnxformer.serve.statuses import ServingError

    with pytest.raises(ServingError) as e:
        parse_body(json.dumps({"prompt": "hi", field: value}).encode(), CompletionRequest)
    assert e.value.status == 400 and words in str(e.value)


def test_kserve_hostile_tensors_are_400(minilm):
    model, url = minilm
    infer = f"{url}/v2/models/{model.manifest.name}/infer"
    text = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}
    good = {"input_ids": [101, 7592, 102], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 0]}
    ids = [{"name": n, "datatype": "INT64", "shape": [1, 3], "data": good[n]} for n in model.input_names]
    assert httpx.post(infer, json={"inputs": ids}).status_code == 200

    def with_values(name, data):
        return {"inputs": [dict(t, data=data) if t["name"] == name else t for t in ids]}

    cases = {
        "lone surrogate": (b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["\\ud800"]}]}',
                           "hex escape|Unicode"),
        "parameters 5": ({"inputs": [text], "parameters": 5}, "parameters"),
        "tensor parameters 5": ({"inputs": [dict(text, parameters=5)]}, "parameters"),
        "datatype list": ({"inputs": [dict(text, datatype=[])]}, "datatype"),
        "huge shape": ({"inputs": [dict(text, shape=[4294967296, 4294967296])]}, "shape"),
        "token_type_ids 2": (with_values("token_type_ids", [2, 0, 0]), "token_type_ids"),
        "attention_mask 7": (with_values("attention_mask", [7, -3, 0]), "attention_mask"),
        "input_ids -1": (with_values("input_ids", [-1, 0, 0]), "input_ids"),
        "ragged data": ({"inputs": [dict(text, shape=[2], data=[["a"], "b", ["c"]])]}, "elements"),
    }
    for case, (body, words) in cases.items():
        r = httpx.post(infer, content=body if isinstance(body, bytes) else None,
                       json=None if isinstance(body, bytes) else body)
        assert r.status_code in (400, 413), (case, r.status_code, r.text)
        assert re.search(words, r.json()["error"]), (case, r.text)


def test_lying_content_length_gets_408_and_the_server_stays_up(minilm):
    model, url = minilm
    status, body = lying_content_length(url, "/v1/embeddings", 1000, b'{"input": "x"', wait=5)
    assert status == 408 and b"did not arrive" in body, (status, body)
    assert _control(url).shape == (384,)


def test_over_long_text_is_refused_from_its_characters_fast(minilm):
    import time

    model, url = minilm
    body = {"input": ["word " * 12_000] * 60}  # 3.6 MB: tokenizing it all takes seconds
    start = time.perf_counter()
    r = httpx.post(f"{url}/v1/embeddings", json=body)
    took = time.perf_counter() - start
    assert r.status_code == 422 and "characters" in r.json()["error"]["message"], r.text
    assert took < 1.0, took


def test_client_disconnect_is_not_a_500(minilm):
    import socket

    model, url = minilm
    host, port = url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inp")
    _control(url)
    import time
    time.sleep(0.3)
    metrics = httpx.get(f"{url}/metrics").text
    assert 'status="500"' not in metrics and "onnxformer_internal_errors_total 0.0" in metrics


def test_escaping_exception_is_json_500_with_logged_id(tiny_artifact, caplog):
    model = Model.load(tiny_artifact("bert", "feature-extraction"))
    model.embed_encodings = lambda chunk: (_ for _ in ()).throw(KeyError("boom"))  # an escape from deep inside
    with running_server(lambda: model) as url:
        r = httpx.post(f"{url}/v1/embeddings", json={"input": ["a"]})
        assert r.status_code == 500, r.text
        message = r.json()["error"]["message"]
        error_id = re.search(r"internal error ([0-9a-f]{12})", message).group(1)
        assert "Traceback" not in r.text
        assert any(error_id in rec.getMessage() for rec in caplog.records)
        assert "onnxformer_internal_errors_total 1.0" in httpx.get(f"{url}/metrics").text
