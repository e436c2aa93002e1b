"""/v1/chat/completions and /v1/completions through the official openai client, on the continuous batch."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devkit.servers import running_server
from onnxformer.runtime.generation import Generator

pytestmark = pytest.mark.timeout(180)

TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<s>assistant:{% endif %}")
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The quick brown fox"}]


@pytest.fixture(scope="module")
def chat_artifact(tmp_path_factory):
    from onnxformer.export import export_checkpoint
    from onnxformer.export.generative_random import make_generative_checkpoint

    ckpt = make_generative_checkpoint(tmp_path_factory.mktemp("chat-ckpt"), "gpt2", chat_template=TEMPLATE)
    out = tmp_path_factory.mktemp("chat-art") / "artifact"
    export_checkpoint(str(ckpt), out)
    return ckpt, out


@pytest.fixture(scope="module")
def chat_server(chat_artifact):
    gen = Generator.load(chat_artifact[1])
    with running_server(lambda: gen, max_new_tokens=64) as url:
        yield gen, url


def rendered(ckpt, messages) -> str:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ckpt).apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def client(url: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_the_chat_template_is_exported_and_hashed(chat_artifact):
    from conftest import manifest_json

    files = manifest_json(chat_artifact[1])["tokenizer"]["files"]
    assert "chat_template.jinja" in files and len(files["chat_template.jinja"]) == 64


def test_openai_client_chat_matches_the_generator(chat_artifact, chat_server):
    gen, url = chat_server
    prompt = rendered(chat_artifact[0], MESSAGES)
    r = client(url).chat.completions.create(model=gen.manifest.name, messages=MESSAGES, max_tokens=20,
                                            temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == gen.generate(prompt, max_new_tokens=20)
    ids = gen.generate_ids([prompt], max_new_tokens=20)[0]
    assert r.choices[0].finish_reason == ("stop" if ids[-1] in gen.special.eos else "length")
    n = len(gen.prompts.tokenizer.encode(prompt).ids)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (n, len(ids))


def test_openai_client_chat_stream_sends_deltas(chat_artifact, chat_server):
    gen, url = chat_server
    prompt = rendered(chat_artifact[0], MESSAGES)
    opts = dict(temperature=0.8, top_p=0.9, seed=4)
    chunks = list(client(url).chat.completions.create(model=gen.manifest.name, messages=MESSAGES, stream=True,
                                                      max_completion_tokens=24, **opts))
    assert len(chunks) > 2 and chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == gen.generate(prompt, max_new_tokens=24, do_sample=True, temperature=0.8, top_p=0.9, seed=4)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_openai_client_completions_whole_and_streamed(chat_server):
    gen, url = chat_server
    c = client(url)
    r = c.completions.create(model=gen.manifest.name, prompt="The quick brown fox", max_tokens=16, temperature=0,
                             stop=["e"])
    expected = gen.generate("The quick brown fox", max_new_tokens=16, stop="e")
    assert r.choices[0].text == expected
    streamed = c.completions.create(model=gen.manifest.name, prompt="The quick brown fox", max_tokens=16,
                                    temperature=0, stop=["e"], stream=True)
    assert "".join(ch.choices[0].text for ch in streamed) == expected


def test_openai_client_passes_min_tokens_and_ignore_eos_in_extra_body(chat_artifact, chat_server):
    """vLLM's extensions through the official client (extra_body), on both routes: eos made the likeliest token by a
    logit bias, min_tokens holds it off, ignore_eos runs to max_tokens; answers equal the generator's."""
    import openai

    gen, url = chat_server
    c, prompt, eos = client(url), rendered(chat_artifact[0], MESSAGES), gen.special.eos[0]
    bias = {str(eos): 100}
    r = c.chat.completions.create(model=gen.manifest.name, messages=MESSAGES, max_tokens=8, temperature=0,
                                  logit_bias=bias, extra_body={"min_tokens": 4})
    assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (5, "stop")
    assert r.choices[0].message.content == gen.generate(prompt, 8, logit_bias={eos: 100}, min_tokens=4)
    r = c.chat.completions.create(model=gen.manifest.name, messages=MESSAGES, max_completion_tokens=6,
                                  temperature=0, logit_bias=bias, extra_body={"ignore_eos": True})
    assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (6, "length")
    r = c.completions.create(model=gen.manifest.name, prompt="The quick brown fox", max_tokens=7, temperature=0,
                             extra_body={"ignore_eos": True, "min_tokens": 7})
    assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (7, "length")
    assert r.choices[0].text == gen.generate("The quick brown fox", 7, ignore_eos=True, min_tokens=7)
    with pytest.raises(openai.BadRequestError, match="ignore_eos=true needs max_tokens"):
        c.completions.create(model=gen.manifest.name, prompt="hi", extra_body={"ignore_eos": True})


def test_concurrent_chats_batch_together_and_stay_exact(chat_artifact, chat_server):
    gen, url = chat_server
    conversations = [[{"role": "user", "content": f"{w} jumps over the lazy dog"}] for w in
                     ("A fox", "The key", "ONNX", "Translation", "Der Fuchs", "0123")]
    expected = [gen.generate(rendered(chat_artifact[0], m), max_new_tokens=30) for m in conversations]

    def ask(messages):
        r = client(url).chat.completions.create(model=gen.manifest.name, messages=messages, max_tokens=30,
                                                temperature=0)
        return r.choices[0].message.content

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(ask, conversations)) == expected
    metrics = httpx.get(f"{url}/metrics").text
    for name in ("onnxformer_generation_running", "onnxformer_generation_waiting",
                 "onnxformer_generation_batch_occupancy", "onnxformer_time_to_first_token_seconds_count",
                 "onnxformer_inter_token_latency_seconds_count", "onnxformer_generated_tokens_total"):
        assert name in metrics
    lines = metrics.splitlines()
    value = lambda prefix: float(next(line for line in lines if line.startswith(prefix)).split()[-1])
    ones, total = value('onnxformer_batch_size_bucket{lane="decode",le="1.0"}'), value(
        'onnxformer_batch_size_count{lane="decode"}')
    assert ones < total  # some decode steps ran several requests' rows at once


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools="),
        ({"messages": MESSAGES, "response_format": {"type": "json_schema"}}, 400, "response_format="),
        ({"messages": MESSAGES, "top_logprobs": 2}, 400, "top_logprobs needs logprobs=true"),
        ({"messages": []}, 400, '"messages" is empty'),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "role 'wizard' is not one of"),
        ({"messages": [{"role": "user", "content": 7}]}, 400, "content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "only text parts"),
        ({"messages": MESSAGES, "max_tokens": 65}, 422, "over this server's limit of 64"),
        ({"messages": [{"role": "user", "content": "word " * 40}], "max_tokens": 64}, 422, "positions"),
        ({"messages": MESSAGES, "max_tokens": 3, "max_completion_tokens": 4}, 400, "disagree"),
        ({"messages": MESSAGES, "ignore_eos": True}, 400, "ignore_eos=true needs max_tokens"),
        ({"messages": MESSAGES, "min_tokens": 17}, 400, "min_tokens=17 is over max_tokens=16"),
        ({"messages": MESSAGES, "max_completion_tokens": 3, "min_tokens": 4}, 400, "min_tokens=4 is over"),
    ],
)
def test_bad_chat_request_gets_its_status(chat_server, body, status, message):
    r = httpx.post(f"{chat_server[1]}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"] and "Traceback" not in r.text


def test_a_model_without_a_chat_template_refuses_chat_but_completes(gen_artifact):
    gen = Generator.load(gen_artifact("gpt2"))
    with running_server(lambda: gen) as url:
        r = httpx.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES}, timeout=30)
        assert r.status_code == 400 and "has no chat template" in r.json()["error"]["message"]
        assert httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}).status_code == 200


def test_a_disconnected_stream_frees_its_decode_slot(chat_server):
    gen, url = chat_server
    with running_server(lambda: gen, max_new_tokens=10_000, max_cached_tokens=100_000, timeout_s=60) as url2:
        with httpx.stream("POST", f"{url2}/v1/completions", timeout=30,
                          json={"prompt": "Hi", "max_tokens": 120, "temperature": 0, "stream": True}) as r:
            next(r.iter_lines())  # generation under way; hang up
        deadline = time.monotonic() + 10
        while "onnxformer_generation_running 0.0" not in httpx.get(f"{url2}/metrics").text:
            assert time.monotonic() < deadline, "the row never left the batch"
            time.sleep(0.02)
        generated = httpx.get(f"{url2}/metrics").text
        tokens = float(next(l for l in generated.splitlines() if l.startswith("onnxformer_generated_tokens_total")).split()[-1])
        assert tokens < 120 + 2  # warm-up's 2 tokens; the hung-up request stopped early


@pytest.fixture
def held_steps(monkeypatch):
    """Continuous-batch steps wait until the test sets the returned event (the tiny model is too fast to watch)."""
    import threading

    from onnxformer.runtime.generation.scheduler import Scheduler

    step, release = Scheduler.step, threading.Event()

    def held(self):
        assert release.wait(30), "never released"
        return step(self)

    monkeypatch.setattr(Scheduler, "step", held)
    return release


def test_a_full_batch_server_answers_429_and_a_slow_one_504(chat_server, held_steps):
    gen, _ = chat_server
    held_steps.set()  # the warm-up runs through Generator, not the batch; let the server start normally
    with running_server(lambda: gen, max_queue=1, timeout_s=1.0) as url:
        held_steps.clear()
        with httpx.stream("POST", f"{url}/v1/completions", timeout=30,
                          json={"prompt": "Hi", "max_tokens": 100, "temperature": 0, "stream": True}) as busy:
            assert busy.status_code == 200  # admitted: its slot is held, its steps are not running
            start = time.perf_counter()
            rejected = httpx.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES}, timeout=30)
            assert rejected.status_code == 429 and time.perf_counter() - start < 1.0
            assert rejected.headers["retry-after"] == "1"
            events = [line for line in busy.iter_lines() if line.startswith("data: ")]
        assert '"code": 504' in events[-1] and "[DONE]" not in events[-1]  # held past the 1 s timeout
        r = httpx.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 60}, timeout=30)
        assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]
        held_steps.set()
        _until_running(url, 0)  # the timed-out rows left the batch at the next step
        ok = httpx.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4}, timeout=30)
        assert ok.status_code == 200


def _until_running(url: str, n: int) -> None:
    deadline = time.monotonic() + 10
    while f"onnxformer_generation_running {float(n)}" not in httpx.get(f"{url}/metrics").text:
        assert time.monotonic() < deadline, f"running never reached {n}"
        time.sleep(0.02)


def test_openai_client_on_a_seq2seq_model_through_its_batch(tmp_path):
    """A seq2seq checkpoint with a chat template: both routes through the openai client, three chats at once served
    from the seq2seq continuous batch, each answer equal to its solo generation."""
    from onnxformer.export import export_checkpoint
    from onnxformer.export.generative_random import make_generative_checkpoint

    ckpt = make_generative_checkpoint(tmp_path / "ckpt", "bart", chat_template=TEMPLATE)
    export_checkpoint(str(ckpt), tmp_path / "artifact")
    gen = Generator.load(tmp_path / "artifact", batching=True)
    conversations = [[{"role": "user", "content": f"{w} jumps over the lazy dog"}] for w in ("A fox", "ONNX", "0123")]
    expected = [gen.generate(rendered(ckpt, m), max_new_tokens=12 + 4 * i) for i, m in enumerate(conversations)]
    with running_server(lambda: gen, max_new_tokens=64) as url:
        c = client(url)
        with ThreadPoolExecutor(3) as pool:
            got = list(pool.map(lambda im: c.chat.completions.create(
                model=gen.manifest.name, messages=im[1], max_tokens=12 + 4 * im[0], temperature=0), enumerate(conversations)))
        streamed = c.completions.create(model=gen.manifest.name, prompt="The quick brown fox", max_tokens=10,
                                        temperature=0, stream=True)
        text = "".join(ch.choices[0].text for ch in streamed)
    assert [r.choices[0].message.content for r in got] == expected
    assert text == gen.generate("The quick brown fox", max_new_tokens=10)


# --- OpenAI's whole request schema (issue 26) ------------------------------------------------------------
@pytest.mark.parametrize("neutral", [{"presence_penalty": 0}, {"frequency_penalty": 0}, {"logit_bias": {}},
                                     {"best_of": 1}, {"echo": False}, {"logprobs": None, "suffix": None}])
def test_neutral_openai_values_are_accepted(chat_server, neutral):
    """LangChain's OpenAI class sends each of these by default; they change nothing."""
    gen, url = chat_server
    r = httpx.post(f"{url}/v1/completions", json={"prompt": "The quick brown fox", "max_tokens": 6, "temperature": 0,
                                                  **neutral}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == gen.generate("The quick brown fox", max_new_tokens=6)


def torch_greedy(ckpt, prompt_ids: list[int], steps: int, presence: float = 0.0, frequency: float = 0.0,
                 bias: dict[int, float] | None = None) -> tuple[list[int], list[float]]:
    """transformers' model, greedy, with OpenAI's logit_bias and penalties applied by their definitions; the chosen
    tokens and their log-probabilities under the raw logits."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    ids, out, logprobs = list(prompt_ids), [], []
    counts = torch.zeros(model.config.vocab_size)
    with torch.no_grad():
        for _ in range(steps):
            raw = model(torch.tensor([ids])).logits[0, -1].float()
            logits = raw.clone()
            for token, b in (bias or {}).items():
                logits[token] += b
            logits -= presence * (counts > 0).float() + frequency * counts
            token = int(logits.argmax())
            logprobs.append(float(torch.log_softmax(raw, -1)[token]))
            counts[token] += 1
            ids.append(token)
            out.append(token)
    return out, logprobs


def test_penalties_logit_bias_and_logprobs_follow_openai_on_the_batch(chat_artifact, chat_server):
    """Greedy with presence/frequency penalties and a logit bias = transformers' logits adjusted by OpenAI's
    definitions, for two requests sharing the continuous batch; logprobs are the model's own."""
    gen, url = chat_server
    prompt = "The quick brown fox"
    ids = gen.prompts.tokenizer.encode(prompt).ids
    plain = gen.generate_ids([prompt], max_new_tokens=8)[0]
    bias = {plain[0]: -100.0, 7: 3.0}  # ban greedy's first token, favour token 7
    settings = [dict(presence=0.0, frequency=1.5, bias=None), dict(presence=1.0, frequency=0.5, bias=bias)]
    expected = [torch_greedy(chat_artifact[0], ids, 8, **s) for s in settings]
    assert expected[0][0] != plain  # the penalties change the text: the test can fail

    def ask(s):
        body = {"prompt": ids, "max_tokens": 8, "temperature": 0, "presence_penalty": s["presence"],
                "frequency_penalty": s["frequency"], "logprobs": 2}
        if s["bias"]:
            body["logit_bias"] = {str(k): v for k, v in s["bias"].items()}
        return httpx.post(f"{url}/v1/completions", json=body, timeout=30).json()["choices"][0]

    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(ask, settings))
    decode = lambda t: gen.prompts.tokenizer.decode([t], skip_special_tokens=False)
    for choice, (tokens, logprobs) in zip(got, expected):
        eos = next((i for i, t in enumerate(tokens) if t in gen.special.eos), len(tokens) - 1)
        tokens, logprobs = tokens[:eos + 1], logprobs[:eos + 1]
        assert choice["logprobs"]["tokens"] == [decode(t) for t in tokens]
        assert choice["logprobs"]["token_logprobs"] == pytest.approx(logprobs, abs=1e-4)
        assert all(1 <= len(top) <= 3 for top in choice["logprobs"]["top_logprobs"])
    assert got[1]["logprobs"]["tokens"][0] != decode(plain[0])
    solo = gen.generate_ids([prompt], max_new_tokens=8, presence_penalty=1.0, frequency_penalty=0.5, logit_bias=bias)
    assert solo[0] == expected[1][0][:len(solo[0])]  # the solo loop (no batch) is the same


def test_n_choices_token_ids_echo_and_usage_chunk(chat_server):
    gen, url = chat_server
    c = client(url)
    sampled = dict(temperature=0.9, seed=11)
    r = c.completions.create(model=gen.manifest.name, prompt="The quick brown fox", max_tokens=8, n=3, **sampled)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    assert [ch.text for ch in r.choices] == [gen.generate("The quick brown fox", max_new_tokens=8, do_sample=True,
                                                          temperature=0.9, seed=11 + j) for j in range(3)]
    assert r.usage.prompt_tokens == len(gen.prompts.tokenizer.encode("The quick brown fox").ids)
    ids = [gen.prompts.tokenizer.encode(p).ids for p in ("The quick brown fox", "Hi")]
    r = c.completions.create(model=gen.manifest.name, prompt=ids, max_tokens=6, temperature=0, echo=True)
    assert [ch.text for ch in r.choices] == [p + gen.generate(p, max_new_tokens=6) for p in ("The quick brown fox", "Hi")]
    chunks = list(c.chat.completions.create(model=gen.manifest.name, messages=MESSAGES, max_tokens=6, n=2,
                                            stream=True, stream_options={"include_usage": True}, **sampled))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(ch.usage is None for ch in chunks[:-1])
    texts = ["".join(ch.choices[0].delta.content or "" for ch in chunks[:-1] if ch.choices[0].index == j) for j in (0, 1)]
    whole = c.chat.completions.create(model=gen.manifest.name, messages=MESSAGES, max_tokens=6, n=2, **sampled)
    assert texts == [ch.message.content for ch in whole.choices]
    whole = c.completions.create(model=gen.manifest.name, prompt="Hi", max_tokens=6, temperature=0, logprobs=1)
    streamed = list(c.completions.create(model=gen.manifest.name, prompt="Hi", max_tokens=6, temperature=0,
                                         logprobs=1, stream=True))
    parts = [ch.choices[0].logprobs for ch in streamed if ch.choices[0].logprobs is not None]
    assert [t for part in parts for t in part.tokens] == whole.choices[0].logprobs.tokens
    assert [x for part in parts for x in part.token_logprobs] == whole.choices[0].logprobs.token_logprobs
    assert len(whole.choices[0].logprobs.tokens) == whole.usage.completion_tokens
    scored = c.chat.completions.create(model=gen.manifest.name, messages=MESSAGES, max_tokens=4, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = scored.choices[0].logprobs.content
    assert len(content) == scored.usage.completion_tokens and all(len(t.top_logprobs) == 3 for t in content)
    assert all(t.logprob == pytest.approx(t.top_logprobs[0].logprob) for t in content)  # greedy: the most likely


def test_langchain_clients_with_their_defaults(chat_artifact, chat_server):
    """LangChain's ChatOpenAI (streamed, stream_usage=True) and OpenAI send their default parameters (neutral
    penalties, logit_bias={}, best_of=1, stream_options, …): all accepted, the answers the generator's."""
    from langchain_openai import ChatOpenAI, OpenAI

    gen, url = chat_server
    common = dict(model=gen.manifest.name, base_url=f"{url}/v1", api_key="unused", max_retries=0, max_tokens=12)
    chat = ChatOpenAI(**common, temperature=0, stream_usage=True)
    chunks = list(chat.stream([("system", "Be brief."), ("user", "The quick brown fox")]))
    message = chunks[0]
    for chunk in chunks[1:]:
        message += chunk
    prompt = rendered(chat_artifact[0], MESSAGES)
    ids = gen.generate_ids([prompt], max_new_tokens=12)[0]
    assert message.content == gen.generate(prompt, max_new_tokens=12)
    n = len(gen.prompts.tokenizer.encode(prompt).ids)
    assert (message.usage_metadata["input_tokens"], message.usage_metadata["output_tokens"]) == (n, len(ids))
    text = OpenAI(**common).invoke("The quick brown fox")  # sampled at its default temperature 0.7
    assert isinstance(text, str)
    assert OpenAI(**common, temperature=0).invoke("The quick brown fox") == \
        gen.generate("The quick brown fox", max_new_tokens=12)
