"""/v1/completions on the real server: parity with Generator, server-sent events, limits, disconnects."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import httpx
import pytest

from devkit.servers import running_server
from onnxformer.runtime.generation import Generator, Run

pytestmark = pytest.mark.timeout(120)

PROMPTS = ["The quick brown fox", "Hi", "ONNX Runtime runs the exported graph"]


@pytest.fixture(scope="module")
def gpt2(gen_artifact) -> Generator:
    return Generator.load(gen_artifact("gpt2"))


@pytest.fixture(scope="module")
def server(gpt2):
    with running_server(lambda: gpt2, max_new_tokens=64, max_tokens_per_text=40, max_texts=4) as url:
        yield url


class Recorder:
    """Wraps ``Generator.start``: keeps every run, and can slow each token or hold it until released."""

    def __init__(self, gen: Generator, delay: float = 0.0):
        self.start, self.delay, self.runs = gen.start, delay, []
        self.release = threading.Event()
        self.release.set()
        self.stepping = threading.Event()
        gen.start = self  # an instance attribute: the server (and generate()) go through it

    def __call__(self, *args: Any, **kwargs: Any) -> Run:
        run = self.start(*args, **kwargs)
        step = run.step

        def slow_step() -> bool:
            self.stepping.set()
            assert self.release.wait(30), "never released"
            time.sleep(self.delay)
            return step()

        run.step = slow_step
        self.runs.append(run)
        return run


def sse(response: httpx.Response) -> list[Any]:
    """The ``data:`` payloads of an event stream, JSON-decoded except the final [DONE]."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
        else:
            assert line == "", f"unexpected line {line!r}"
    return events


def complete(url: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", json={"temperature": 0, **body}, timeout=30)


# --- parity ------------------------------------------------------------------------------------------
def test_completion_matches_generator(gpt2, server):
    r = complete(server, prompt=PROMPTS, max_tokens=20)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == gpt2.manifest.name
    assert [c["text"] for c in body["choices"]] == gpt2.generate(PROMPTS, max_new_tokens=20)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    ids = gpt2.generate_ids(PROMPTS, max_new_tokens=20)
    eos = set(gpt2.special.eos)
    assert [c["finish_reason"] for c in body["choices"]] == ["stop" if i[-1] in eos else "length" for i in ids]
    prompt_tokens = sum(len(e.ids) for e in gpt2.prompts.tokenizer.encode_batch(PROMPTS))
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": sum(map(len, ids)),
                             "total_tokens": prompt_tokens + sum(map(len, ids))}


def test_sampled_completion_is_reproducible_with_a_seed(gpt2, server):
    opts = dict(temperature=0.8, top_p=0.9, top_k=20, seed=5)
    r = complete(server, prompt=PROMPTS[0], max_tokens=16, **opts)
    assert r.status_code == 200, r.text
    expected = gpt2.generate(PROMPTS[0], max_new_tokens=16, do_sample=True, temperature=0.8, top_p=0.9, top_k=20,
                             seed=5)
    assert r.json()["choices"][0]["text"] == expected


def test_stream_sends_the_same_text_as_events(gpt2, server):
    with httpx.stream("POST", f"{server}/v1/completions", timeout=30,
                      json={"prompt": PROMPTS[0], "max_tokens": 24, "temperature": 0, "stream": True,
                            "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse(r)
    assert events[-1] == "[DONE]"
    chunks, last = events[:-2], events[-2]
    assert len(chunks) > 2  # pieces arrive as they are produced, not as one blob
    assert len({c["id"] for c in events[:-1]}) == 1 and all(c["object"] == "text_completion" for c in events[:-1])
    assert "".join(c["choices"][0]["text"] for c in chunks) == gpt2.generate(PROMPTS[0], max_new_tokens=24)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["usage"] is None for c in chunks)  # include_usage: null on every chunk, then the usage alone
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == len(gpt2.generate_ids([PROMPTS[0]], max_new_tokens=24)[0])


def test_concurrent_streams_interleave_and_match_serial(gpt2, server):
    expected = {p: gpt2.generate(p, max_new_tokens=32) for p in PROMPTS}

    def stream(prompt: str) -> str:
        with httpx.stream("POST", f"{server}/v1/completions", timeout=30,
                          json={"prompt": prompt, "max_tokens": 32, "temperature": 0, "stream": True}) as r:
            return "".join(e["choices"][0]["text"] for e in sse(r)[:-1])

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(stream, PROMPTS * 4))
    assert got == [expected[p] for p in PROMPTS * 4]


def test_seq2seq_completion_matches_generator(gen_artifact):
    t5 = Generator.load(gen_artifact("t5"))
    with running_server(lambda: t5) as url:
        r = complete(url, prompt=PROMPTS[:2], max_tokens=12)
        meta = httpx.get(f"{url}/v2/models/{t5.manifest.name}", timeout=10).json()["parameters"]
    assert r.status_code == 200, r.text
    assert [c["text"] for c in r.json()["choices"]] == t5.generate(PROMPTS[:2], max_new_tokens=12)
    assert meta["continuous_batching"] is True and meta["max_slots"] >= 1


def _streams(url: str, prompts: list[str], max_new: list[int]) -> list[str]:
    def stream(job: tuple[str, int]) -> str:
        with httpx.stream("POST", f"{url}/v1/completions", timeout=60,
                          json={"prompt": job[0], "max_tokens": job[1], "temperature": 0, "stream": True}) as r:
            return "".join(e["choices"][0]["text"] for e in sse(r)[:-1])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(stream, zip(prompts, max_new)))


def test_seq2seq_streams_share_the_batch_and_match_solo(gen_artifact):
    """Concurrent streamed requests of different lengths on a BART-style model share decode calls (rows at
    different steps, sources of different lengths) and each equals its solo generation."""
    bart = Generator.load(gen_artifact("bart"), batching=True)
    prompts, max_new = PROMPTS * 3, [30, 8, 21, 14, 25, 5, 40, 11, 17]
    expected = [bart.generate(p, max_new_tokens=m) for p, m in zip(prompts, max_new)]
    with running_server(lambda: bart, max_slots=4) as url:
        got = _streams(url, prompts, max_new)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert got == expected
    decode = {line.split("{")[0]: float(line.split()[-1]) for line in metrics.splitlines()
              if line.startswith("onnxformer_batch_size_") and 'lane="decode"' in line and "_bucket" not in line}
    calls, rows = decode["onnxformer_batch_size_count"], decode["onnxformer_batch_size_sum"]
    assert calls < sum(max_new) and rows / calls > 1.5  # rows decoded together, up to 4 per call


def test_an_old_seq2seq_artifact_takes_turns(gen_artifact, monkeypatch, caplog):
    """A step graph without the inputs batching needs (exported before it) is served turn by turn, logged."""
    from onnxformer.runtime.generation import seq2seq_batch

    monkeypatch.setattr(seq2seq_batch, "STEP_INPUTS", ("decoder_attention_mask", "an_input_it_lacks"))
    t5 = Generator.load(gen_artifact("t5"))
    with caplog.at_level("WARNING", logger="onnxformer.serve"), running_server(lambda: t5) as url:
        got = _streams(url, PROMPTS, [12, 12, 12])
        meta = httpx.get(f"{url}/v2/models/{t5.manifest.name}", timeout=10).json()["parameters"]
    assert got == [t5.generate(p, max_new_tokens=12) for p in PROMPTS]
    assert meta["continuous_batching"] is False
    assert "continuous batching is off" in caplog.text and "an_input_it_lacks" in caplog.text


# --- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"prompt": "hi", "n": 5}, 413, "= 5 completions in one request; the limit is 4"),
        ({"prompt": "hi", "suffix": "!"}, 400, "suffix"),
        ({"prompt": "hi", "best_of": 2}, 400, "best_of=2"),
        ({"prompt": "hi", "echo": True, "logprobs": 1}, 400, "echo with logprobs"),
        ({"prompt": "hi", "logit_bias": {"x": 1}}, 400, "logit_bias key 'x'"),
        ({"prompt": "hi", "logit_bias": {"1000000": 1}}, 400, "outside this model's vocabulary"),
        ({"prompt": "hi", "presence_penalty": 3}, 400, "presence_penalty"),
        ({"prompt": "hi", "ignore_eos": True}, 400, "ignore_eos=true needs max_tokens"),
        ({"prompt": "hi", "ignore_eos": "yes", "max_tokens": 3}, 400, "ignore_eos"),
        ({"prompt": "hi", "max_tokens": 3, "min_tokens": 4}, 400, "min_tokens=4 is over max_tokens=3"),
        ({"prompt": "hi", "min_tokens": 17}, 400, "min_tokens=17 is over max_tokens=16"),
        ({"prompt": "hi", "min_tokens": -1}, 400, "min_tokens"),
        ({"prompt": [1, 10**6]}, 400, "not a token id of this model"),
        ({"prompt": "hi", "unknown_field": 1}, 400, "unknown_field"),
        ({"prompt": []}, 400, '"prompt" is empty'),
        ({"prompt": ""}, 400, "empty"),
        ({"prompt": "hi", "max_tokens": 65}, 422, "over this server's limit of 64"),
        ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": "word " * 20}, 422, "tokens; the limit is 40"),  # fits the model, not the server limit
        ({"prompt": ["a"] * 5}, 413, "the limit is 4"),
        ({"prompt": "hi", "temperature": -1}, 400, "temperature"),
        ({"prompt": "hi", "top_p": 0}, 400, "top_p"),
        ({"prompt": 7}, 400, "prompt"),
        ({"prompt": "hi", "model": "other"}, 404, "unknown model 'other'"),
    ],
)
def test_bad_completion_request_gets_its_status(server, body, status, message):
    r = httpx.post(f"{server}/v1/completions", json=body, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["code"] == status
    assert "Traceback" not in r.text


def test_encoder_routes_refuse_a_generation_model_and_back(gpt2, server, tiny_artifact):
    from onnxformer.runtime import Model

    r = httpx.post(f"{server}/v1/embeddings", json={"input": ["hi"]})
    assert r.status_code == 400 and "use /v1/completions" in r.json()["error"]["message"]
    name = gpt2.manifest.name
    meta = httpx.get(f"{server}/v2/models/{name}").json()
    assert meta["parameters"]["endpoint"] == "/v1/completions" and meta["inputs"] == []
    r = httpx.post(f"{server}/v2/models/{name}/infer", json={"inputs": []})
    assert r.status_code == 400 and "use /v1/completions" in r.json()["error"]
    encoder = Model.load(tiny_artifact("bert", "feature-extraction"))
    with running_server(lambda: encoder) as url:
        r = complete(url, prompt="hi")
    assert r.status_code == 400 and "needs a text-generation" in r.json()["error"]["message"]


# --- limits and lifecycle ----------------------------------------------------------------------------
def test_client_disconnect_stops_the_run(gen_artifact):
    gen = Generator.load(gen_artifact("gpt2"))
    recorder = Recorder(gen, delay=0.02)  # 100 tokens would take ≥ 2 s
    with running_server(lambda: gen, max_new_tokens=100, continuous_batching=False) as url:  # turn-taking
        recorder.runs.clear()  # the warm-up's run
        with httpx.stream("POST", f"{url}/v1/completions", timeout=30,
                          json={"prompt": PROMPTS[0], "max_tokens": 100, "temperature": 0, "stream": True}) as r:
            next(r.iter_lines())  # the first event: generation is under way; then hang up
        run = recorder.runs[0]
        _until(lambda: "onnxformer_queue_depth 0.0" in httpx.get(f"{url}/metrics").text)
        time.sleep(0.3)  # a step already running when the client left still finishes
        produced = len(run.streams[0].ids)
        time.sleep(0.3)  # ≥ 15 steps' worth
        assert len(run.streams[0].ids) == produced  # then no more tokens
    assert not run.done and produced < 100


def test_too_many_generations_answer_429_at_once(gen_artifact):
    gen = Generator.load(gen_artifact("gpt2"))
    recorder = Recorder(gen)
    with running_server(lambda: gen, max_queue=1, continuous_batching=False) as url:
        recorder.release.clear()
        recorder.stepping.clear()
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(complete, url, prompt="busy", max_tokens=4)
            assert recorder.stepping.wait(10)
            start = time.perf_counter()
            rejected = complete(url, prompt="one too many", max_tokens=4)
            elapsed = time.perf_counter() - start
            stream = complete(url, prompt="one too many", max_tokens=4, stream=True)  # refused before a 200
            recorder.release.set()
            assert busy.result().status_code == 200
    assert rejected.status_code == 429 and elapsed < 1.0
    assert "busy" in rejected.json()["error"]["message"]
    assert stream.status_code == 429 and stream.headers["retry-after"] == "1"


def test_timeout_gives_504_or_an_error_event(gen_artifact):
    gen = Generator.load(gen_artifact("gpt2"))
    Recorder(gen, delay=0.05)
    with running_server(lambda: gen, timeout_s=0.5, continuous_batching=False) as url:
        r = complete(url, prompt="slow", max_tokens=60)
        assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]
        with httpx.stream("POST", f"{url}/v1/completions", timeout=30,
                          json={"prompt": "slow", "max_tokens": 60, "temperature": 0, "stream": True}) as s:
            events = sse(s)
    assert events[-1]["error"]["code"] == 504 and "[DONE]" not in events


def test_api_key_guards_completions(gpt2):
    with running_server(lambda: gpt2, api_key="s3cret-key") as url:
        assert complete(url, prompt="hi").status_code == 401
        r = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 2},
                       headers={"Authorization": "Bearer s3cret-key"})
        assert r.status_code == 200


def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)
