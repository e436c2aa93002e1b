"""KServe v2 over gRPC with the official tritonclient.grpc client: the same answers as the HTTP routes."""
from __future__ import annotations

import numpy as np
import pytest

from devkit.servers import free_port, running_server
from onnxformer.runtime import Model

pytestmark = pytest.mark.timeout(120)
TEXTS = ["The cat sat on the mat.", "ONNX Runtime on two cores", "hello"]


@pytest.fixture(scope="module")
def served(tiny_artifact):
    model = Model.load(tiny_artifact("bert", "feature-extraction"))
    port = free_port()
    with running_server(lambda: model, grpc_port=port) as url:
        yield model, url, f"127.0.0.1:{port}"


def test_tritonclient_grpc_text_and_raw_tensors(served):
    import tritonclient.grpc as triton

    model, _, address = served
    client = triton.InferenceServerClient(address)
    name = model.manifest.name
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
    meta = client.get_model_metadata(name, as_json=True)
    assert [i["name"] for i in meta["inputs"]] == ["text", *model.input_names]
    text = triton.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
    vectors = client.infer(name, [text]).as_numpy("embedding")
    np.testing.assert_allclose(vectors, model.embed(TEXTS), atol=1e-5)
    feeds = model.tokenizer.encode(TEXTS).feeds
    inputs = []
    for key, array in feeds.items():
        tensor = triton.InferInput(key, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    states = client.infer(name, inputs).as_numpy("last_hidden_state")
    np.testing.assert_allclose(states, model.run(feeds)["last_hidden_state"], atol=1e-5)


def test_tritonclient_grpc_config_and_repository_index_match_http(served):
    import httpx
    import tritonclient.grpc as triton

    model, url, address = served
    client, name = triton.InferenceServerClient(address), model.manifest.name
    config = client.get_model_config(name, as_json=True)["config"]
    http = httpx.get(f"{url}/v2/models/{name}/config").json()
    assert (config["name"], config["backend"], config["max_batch_size"]) == (name, "onnxruntime", http["max_batch_size"])
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config["input"]] == \
        [(t["name"], t["data_type"], t["dims"]) for t in http["input"]]
    assert [t["name"] for t in config["output"]] == [t["name"] for t in http["output"]]
    assert config["parameters"]["task"]["string_value"] == http["parameters"]["task"] == "feature-extraction"
    index = client.get_model_repository_index(as_json=True)["models"]
    assert index == [{"name": name, "version": "1", "state": "READY"}]
    assert index == httpx.post(f"{url}/v2/repository/index").json()


def test_grpc_errors_carry_the_kind_status(served):
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    model, _, address = served
    client = triton.InferenceServerClient(address)
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_metadata("nope")
    assert "StatusCode.NOT_FOUND" in str(missing.value.status())
    bad = triton.InferInput("input_ids", [1, 3], "INT64")
    bad.set_data_from_numpy(np.array([[1, 2, 10**9]], dtype=np.int64))
    with pytest.raises(InferenceServerException) as refused:
        client.infer(model.manifest.name, [bad])
    assert "StatusCode.INVALID_ARGUMENT" in str(refused.value.status())


def test_a_server_side_failure_is_internal_with_an_id_and_counted(served, monkeypatch):
    """As over HTTP: the client gets INTERNAL with an id (never the error's text), the log and
    onnxformer_internal_errors_total get the error."""
    import httpx
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    model, url, address = served

    def boom(feeds):
        raise RuntimeError("secret /srv/path detail")

    count = lambda: float(next(l.split()[1] for l in httpx.get(f"{url}/metrics").text.splitlines()
                               if l.startswith("onnxformer_internal_errors_total")))
    before = count()
    monkeypatch.setattr(model, "run", boom)
    feeds = model.tokenizer.encode(TEXTS).feeds
    inputs = []
    for key, array in feeds.items():
        tensor = triton.InferInput(key, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    with pytest.raises(InferenceServerException) as failed:
        triton.InferenceServerClient(address).infer(model.manifest.name, inputs)
    assert "StatusCode.INTERNAL" in str(failed.value.status())
    assert "internal error" in failed.value.message() and "secret" not in failed.value.message()
    assert count() == before + 1
