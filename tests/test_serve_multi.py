"""Several artifacts in one server, each under its own name: the official openai, tritonclient.http and
tritonclient.grpc clients reach each by name (issue 16)."""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from devkit.servers import free_port, running_server
from onnxformer.runtime import Model
from onnxformer.runtime.generation import Generator

pytestmark = pytest.mark.timeout(180)
TEXTS = ["The cat sat on the mat.", "ONNX Runtime on two cores"]


@pytest.fixture(scope="module")
def two(tiny_artifact, gen_artifact):
    embedder = Model.load(tiny_artifact("bert", "feature-extraction"))
    classifier = Model.load(tiny_artifact("bert", "text-classification"))
    generator = Generator.load(gen_artifact("gpt2"))
    port = free_port()
    models = [("embedder", embedder), ("classifier", classifier), ("writer", generator)]
    with running_server(lambda: models, grpc_port=port) as url:
        yield dict(models), url, f"127.0.0.1:{port}"


def test_openai_client_reaches_each_model_by_name(two):
    from openai import OpenAI

    models, url, _ = two
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    assert sorted(m.id for m in client.models.list()) == ["classifier", "embedder", "writer"]
    got = client.embeddings.create(model="embedder", input=TEXTS)
    np.testing.assert_allclose([d.embedding for d in got.data], models["embedder"].embed(TEXTS), atol=1e-5)
    done = client.completions.create(model="writer", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert done.choices[0].text == models["writer"].generate("Once upon a time", max_new_tokens=5)
    r = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS})
    assert r.status_code == 400 and "serves several models" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS, "model": "classifier"})
    assert r.status_code == 400 and "/v1/embeddings needs a feature-extraction model" in r.text
    r = httpx.post(f"{url}/v1/classify", json={"inputs": TEXTS, "model": "classifier"})
    assert r.status_code == 200 and r.json()["results"] == models["classifier"].classify(TEXTS)


def test_triton_http_and_grpc_clients_reach_each_model_by_name(two):
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    models, url, address = two
    for triton, client in ((thttp, thttp.InferenceServerClient(url.removeprefix("http://"))),
                           (tgrpc, tgrpc.InferenceServerClient(address))):
        for name, output in (("embedder", "embedding"), ("classifier", "logits")):
            text = triton.InferInput("text", [len(TEXTS)], "BYTES")
            text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
            got = client.infer(name, [text]).as_numpy(output)
            model = models[name]
            want = model.embed(TEXTS) if name == "embedder" else model.run(model.tokenizer.encode(TEXTS).feeds)["logits"]
            np.testing.assert_allclose(got, want, atol=1e-5)
    index = httpx.post(f"{url}/v2/repository/index").json()
    assert sorted(m["name"] for m in index) == ["classifier", "embedder", "writer"]
    config = httpx.get(f"{url}/v2/models/classifier/config").json()
    assert config["name"] == "classifier" and [i["name"] for i in config["input"]][0] == "text"
    assert httpx.get(f"{url}/v2/models/nope/config").status_code == 404


def test_served_model_names_must_match_the_directories(tiny_artifact):
    from onnxformer.serve.config import ServeConfig
    from onnxformer.serve.server import served_names
    from onnxformer.serve.statuses import ServingError

    assert served_names(ServeConfig(served_model_name="a,b"), 2) == ["a", "b"]
    assert served_names(ServeConfig(), 2) == [None, None]
    with pytest.raises(ServingError, match="needs 2 distinct comma-separated name"):
        served_names(ServeConfig(served_model_name="a,a"), 2)
