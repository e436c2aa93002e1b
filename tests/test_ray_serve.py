"""onnxformer.serve.ray on a real two-node Ray cluster (ray.cluster_utils.Cluster: a head and a worker node on this
machine), through Ray's HTTP proxy with the openai and tritonclient clients; autoscaling; a replica SIGKILLed under
load. One cluster for the module."""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import httpx
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray[serve] is not installed (the `scale` extra)")
serve = pytest.importorskip("ray.serve")

from devkit.servers import free_port  # noqa: E402
from onnxformer.runtime import Model  # noqa: E402
from onnxformer.runtime.generation import Generator  # noqa: E402

TEXTS = ["Ray places replicas", "on every node of the cluster"]
REPLICA = "ServeReplica:onnxformer:onnxformer"


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.5")
    os.environ.setdefault("RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.5")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    yield {"url": f"http://127.0.0.1:{port}", "port": port, "cluster": c}
    serve.shutdown()
    ray.shutdown()
    c.shutdown()
    assert not ray.is_initialized()


class Replica:
    def __init__(self, actor_id: str, info: dict):
        self.actor_id, self.pid, self.node_id = actor_id, info["Pid"], info["Address"]["NodeID"]


def _replicas() -> list[Replica]:
    """The live replicas, from the GCS actor table (the state API would need Ray's dashboard)."""
    from ray._private.state import actors

    return [Replica(i, a) for i, a in actors().items() if a["ActorClassName"] == REPLICA and a["State"] == "ALIVE"]


def _wait(check, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(message)


@pytest.fixture(scope="module")
def two_replicas(cluster, minilm_artifact, gen_artifact):
    from onnxformer.serve.ray import app

    gpt2 = gen_artifact("gpt2")
    # the same builder `serve run onnxformer.serve.ray:app artifacts=... num_replicas=2 num_cpus=1` calls
    serve.run(app({"artifacts": f"{minilm_artifact},{gpt2}", "num_replicas": "2", "num_cpus": "1", "threads": "1",
                   "served_model_name": "minilm,gpt2"}), name="onnxformer", route_prefix="/")
    return {"minilm": minilm_artifact, "gpt2": gpt2, **cluster}


def test_replicas_on_both_nodes(two_replicas):
    replicas = _replicas()
    assert len(replicas) == 2
    assert len({r.node_id for r in replicas}) == 2  # one CPU per node, one CPU per replica


def test_openai_and_tritonclient_through_the_proxy(two_replicas):
    import openai
    import tritonclient.http as thttp

    url = two_replicas["url"]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    expected = Model.load(two_replicas["minilm"], variant="fp32").embed(TEXTS)
    got = np.array([d.embedding for d in client.embeddings.create(model="minilm", input=TEXTS).data])
    np.testing.assert_allclose(got, expected, atol=1e-5)

    triton = thttp.InferenceServerClient(url.removeprefix("http://"))
    text = thttp.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_))
    np.testing.assert_allclose(triton.infer("minilm", [text]).as_numpy("embedding"), expected, atol=1e-5)
    triton.close()

    greedy = Generator.load(two_replicas["gpt2"]).generate("Once upon", max_new_tokens=8)
    whole = client.completions.create(model="gpt2", prompt="Once upon", max_tokens=8, temperature=0)
    assert whole.choices[0].text == greedy
    streamed = client.completions.create(model="gpt2", prompt="Once upon", max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == greedy


def _load(url: str, stop: threading.Event, outcomes: Counter, threads: int = 4) -> list[threading.Thread]:
    def loop() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    r = http.post(f"{url}/v1/embeddings", json={"model": "minilm", "input": TEXTS})
                    outcomes[r.status_code] += 1
                except httpx.HTTPError as e:
                    outcomes[type(e).__name__] += 1

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    return workers


def test_sigkill_of_a_replica_under_load(two_replicas):
    url, outcomes, stop = two_replicas["url"], Counter(), threading.Event()
    workers = _load(url, stop, outcomes)
    _wait(lambda: outcomes[200] >= 20, 60, "no load got through")
    victim = _replicas()[0]
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = sum(outcomes.values())
    _wait(lambda: victim.actor_id not in {r.actor_id for r in _replicas()} and len(_replicas()) == 2, 90,
          "Ray did not replace the killed replica")
    time.sleep(1)
    stop.set()
    for w in workers:
        assert w.join(timeout=40) is None and not w.is_alive()  # nothing hangs
    failed = sum(n for k, n in outcomes.items() if k != 200)
    print(f"\nSIGKILL under load: {outcomes[200]} ok, {failed} failed {dict(outcomes)}; {killed_at} before the kill")
    assert failed <= 4  # at most the requests in flight on the killed replica (4 clients)
    r = httpx.post(f"{url}/v1/embeddings", json={"model": "minilm", "input": TEXTS}, timeout=30)
    assert r.status_code == 200


def test_autoscaling_up_and_down(cluster, minilm_artifact):
    from onnxformer.serve.ray import app

    auto = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 0.5,
            "downscale_delay_s": 2, "look_back_period_s": 2, "metrics_interval_s": 0.5}
    serve.run(app({"artifacts": str(minilm_artifact), "autoscaling_config": auto, "num_cpus": 1, "threads": 1,
                   "served_model_name": "minilm"}),
              name="onnxformer", route_prefix="/")
    _wait(lambda: len(_replicas()) == 1, 60, "autoscaling did not start at one replica")
    outcomes, stop = Counter(), threading.Event()
    workers = _load(cluster["url"], stop, outcomes)
    try:
        _wait(lambda: len(_replicas()) == 2, 90, "load did not scale to two replicas")
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=40)
    assert set(outcomes) == {200}
    _wait(lambda: len(_replicas()) == 1, 90, "idle did not scale back to one replica")


def test_ray_config_for_serve_deploy(minilm_artifact, tmp_path, capsys):
    """`onnxformer ray-config` writes what `serve deploy` reads (checked with Ray's ServeDeploySchema); its args are
    the application builder's."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from onnxformer.cli import main
    from onnxformer.serve.ray import check_args

    out = tmp_path / "serve.yaml"
    assert main(["ray-config", str(minilm_artifact), "--out", str(out), "--min-replicas", "1", "--max-replicas", "3",
                 "--num-cpus", "2", "--arg", "max_batch_size=16"]) == 0
    doc = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(doc)
    (application,) = doc["applications"]
    assert application["import_path"] == "onnxformer.serve.ray:app"
    assert application["args"] == {"artifacts": [str(minilm_artifact)], "max_batch_size": "16"}
    (deployment,) = application["deployments"]
    assert deployment["autoscaling_config"]["max_replicas"] == 3 and deployment["ray_actor_options"] == {"num_cpus": 2}
    check_args(application["args"])
    assert main(["ray-config", str(minilm_artifact), "--out", str(out), "--arg", "port=9"]) == 1
    assert "host and port are Ray's proxy's" in capsys.readouterr().err
