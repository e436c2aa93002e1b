"""Runtime robustness: refusals before ONNX Runtime sees a file, bad calls, threads, I/O binding, batching,
and the torch-free import."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import externalize

from onnxformer.errors import ArtifactError, InputError, IntegrityError
from onnxformer.runtime import Model
from onnxformer.runtime.batching import plan_batches
from onnxformer.runtime.onnx_wire import external_locations

TEXTS = ["hello world", "a somewhat longer sentence about nothing in particular, with commas", "x",
         "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.", "short one", "🙂 emoji", "tokens " * 40]


@pytest.fixture(scope="module")
def embedder(tiny_artifact):
    return Model.load(tiny_artifact("bert"))


@contextlib.contextmanager
def ort_untouched():
    """Fail if ONNX Runtime is asked to open anything inside the block: refusals must come first."""
    import onnxruntime

    calls = []
    original = onnxruntime.InferenceSession
    onnxruntime.InferenceSession = lambda *a, **k: calls.append(a) or original(*a, **k)
    try:
        yield
    finally:
        onnxruntime.InferenceSession = original
        assert calls == [], "onnxruntime.InferenceSession was reached"


# --- refusals ------------------------------------------------------------------------------------------------

def test_missing_manifest_and_unknown_schema(tiny_artifact, copy_artifact, tmp_path):
    art = copy_artifact(tiny_artifact("bert"))
    manifest = json.loads((art / "manifest.json").read_text())
    (art / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    with ort_untouched():
        with pytest.raises(ArtifactError, match="does not exist"):
            Model.load(tmp_path / "nowhere")
        with pytest.raises(ArtifactError, match="has no manifest.json"):
            Model.load(tmp_path)
        with pytest.raises(ArtifactError, match="schema version 99; this onnxformer reads version 1"):
            Model.load(art)


def test_sha256_mismatch(tiny_artifact, copy_artifact):
    art = copy_artifact(tiny_artifact("bert"))
    with open(art / "fp32" / "model.onnx", "ab") as f:
        f.write(b"\0")
    with ort_untouched(), pytest.raises(IntegrityError, match="fp32/model.onnx does not match the manifest"):
        Model.load(art)


def test_external_data_inside_the_artifact_loads(tiny_artifact, copy_artifact, embedder):
    art = copy_artifact(tiny_artifact("bert"))
    path = externalize(art)
    assert external_locations(path) == ["model.onnx_data"]
    np.testing.assert_allclose(Model.load(art).embed(TEXTS[:3]), embedder.embed(TEXTS[:3]), atol=1e-6)


@pytest.mark.parametrize("location,match", [
    ("/etc/passwd", "absolute"),
    ("../outside.bin", r"'\.\.' leaves the artifact directory"),
    ("leak.bin", "outside the artifact directory"),  # a symlink pointing out
    ("unlisted.bin", "a file the manifest does not hash"),
])
def test_external_data_escaping_the_artifact_is_refused(tiny_artifact, copy_artifact, tmp_path, location, match):
    art = copy_artifact(tiny_artifact("bert"))
    externalize(art)
    data = art / "fp32" / "model.onnx_data"
    externalize(art, rewrite=location)  # hashed again: only the location check stands in the way
    if location == "leak.bin":
        outside = tmp_path / "secret.bin"
        outside.write_bytes(data.read_bytes())
        os.symlink(outside, art / "fp32" / "leak.bin")
    if location == "unlisted.bin":  # a real file inside, but added after hashing
        (art / "fp32" / "unlisted.bin").write_bytes(data.read_bytes())
    with ort_untouched(), pytest.raises(IntegrityError, match=match):
        Model.load(art)


def test_wire_reader_finds_subgraph_and_sparse_locations(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    def external(name: str, location: str) -> onnx.TensorProto:
        t = helper.make_tensor(name, TensorProto.FLOAT, [2], [1.0, 2.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
        t.external_data.add(key="offset", value="0")
        return t

    branch = helper.make_graph([helper.make_node("Identity", ["w_then"], ["y"])], "then", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                               initializer=[external("w_then", "then.bin")])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    indices = helper.make_tensor("si", TensorProto.INT64, [2], [0, 1])
    sparse = helper.make_sparse_tensor(external("sv", "sparse.bin"), indices, [4])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              initializer=[external("w", "main.bin")], sparse_initializer=[sparse])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    assert sorted(external_locations(path)) == ["main.bin", "sparse.bin", "then.bin"]
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(IntegrityError, match="not a readable ONNX protobuf"):
        external_locations(path)


# --- bad calls -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("texts,match", [
    ([], "empty list"), ([""], "empty string"), (["ok", "   "], "item 1 is an empty string"),
    (["ok", 3], "item 1 is int"), ("a bare string", "not a single string"), (["ok", None], "NoneType"),
])
def test_bad_texts(embedder, texts, match):
    with pytest.raises(InputError, match=match):
        embedder.embed(texts)


def test_over_long_needs_truncate_and_nothing_partial(embedder):
    long = "word " * 200  # tiny model limit: 128 tokens
    with pytest.raises(InputError, match=r"text 1 has \d+ tokens, over the model's limit of 128; .*truncate=True"):
        embedder.embed(["fine", long])
    out = embedder.embed(["fine", long], truncate=True)
    assert out.shape == (2, 32) and np.isfinite(out).all()


def test_wrong_task_and_bad_options(embedder, tiny_artifact):
    with pytest.raises(InputError, match="answer\\(\\) needs a question-answering model; .* is feature-extraction"):
        embedder.answer("q?", "context")
    with pytest.raises(InputError, match="classify\\(\\) needs a text-classification model"):
        embedder.classify(["x"])
    with pytest.raises(InputError, match="tag\\(\\) needs a token-classification model"):
        embedder.tag(["x"])
    classifier = Model.load(tiny_artifact("bert", "text-classification"))
    with pytest.raises(InputError, match="embed\\(\\) needs a feature-extraction model"):
        classifier.embed(["x"])
    with pytest.raises(InputError, match="top_k must be a positive integer"):
        classifier.classify(["x"], top_k=0)
    with pytest.raises(InputError, match="missing inputs"):
        classifier.run({"input_ids": np.ones((1, 3), dtype=np.int64)})


def test_bad_answer_calls(tiny_artifact):
    qa = Model.load(tiny_artifact("bert", "question-answering"))
    with pytest.raises(InputError, match="empty string"):
        qa.answer("", "some context")
    with pytest.raises(InputError, match="one question string"):
        qa.answer(["q?"], "context")
    with pytest.raises(InputError, match="cannot fit the question"):
        qa.answer("why " * 200, "short context")
    with pytest.raises(InputError, match="doc_stride must be"):
        qa.answer("q?", "context", doc_stride=500)


def test_bad_aggregation(tiny_artifact):
    tagger = Model.load(tiny_artifact("bert", "token-classification"))
    with pytest.raises(InputError, match="unknown aggregation 'avg'"):
        tagger.tag(["x"], aggregation="avg")


# --- batching, I/O binding, threads ----------------------------------------------------------------------------

def test_plan_batches_budget_cap_and_order():
    lengths = [5, 100, 7, 100, 50, 6, 5, 300]
    plan = plan_batches(lengths, max_batch_tokens=210, max_batch_size=3)
    assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
    assert plan[0] == [7]  # longer than the budget: alone
    for batch in plan:
        assert len(batch) <= 3 and (len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 210)
    with pytest.raises(InputError):
        plan_batches(lengths, max_batch_tokens=0)


def test_batched_equals_one_by_one_in_input_order(embedder):
    together = embedder.embed(TEXTS, max_batch_tokens=64, batch_size=2)
    alone = np.stack([embedder.embed([t])[0] for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_io_binding_on_cpu_equals_plain_run_and_reuses_buffers(tiny_artifact, embedder):
    bound = Model.load(tiny_artifact("bert"), provider="cpu", io_binding=True)
    assert bound.runner.io_binding and not embedder.runner.io_binding
    np.testing.assert_allclose(bound.embed(TEXTS), embedder.embed(TEXTS), atol=1e-6)
    feeds = bound.tokenizer.encode(TEXTS[:2]).feeds
    first = bound.run(feeds)["last_hidden_state"]
    grown = bound.runner._local.buffers.grown
    second = bound.run(bound.tokenizer.encode(TEXTS[2:4]).feeds)["last_hidden_state"]
    assert bound.runner._local.buffers.grown == grown  # smaller call: the same buffers, no new allocation
    np.testing.assert_allclose(first, embedder.run(feeds)["last_hidden_state"], atol=1e-6)  # not overwritten
    assert second.shape[0] == 2


@pytest.mark.parametrize("io_binding", [False, True])
def test_sixteen_threads_equal_serial(tiny_artifact, io_binding):
    model = Model.load(tiny_artifact("bert"), provider="cpu", io_binding=io_binding)
    jobs = [TEXTS[i % len(TEXTS):] + TEXTS[: i % len(TEXTS)] for i in range(32)]
    serial = [model.embed(j) for j in jobs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def work(k: int) -> None:
        try:
            start.wait()
            for i in range(k, len(jobs), 16):
                results[i] = model.embed(jobs[i])
        except BaseException as e:  # surfaced below: a thread's failure must fail the test
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, expected in enumerate(serial):
        np.testing.assert_array_equal(results[i], expected)


# --- torch-free ----------------------------------------------------------------------------------------------

def test_runtime_import_pulls_no_torch_transformers_or_onnx(tiny_artifact):
    code = (
        "import sys, json; from onnxformer.runtime import Model; "
        f"m = Model.load({str(tiny_artifact('bert'))!r}); m.embed(['hello']); "
        "print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in "
        "('torch', 'transformers', 'onnx', 'optimum', 'sentence_transformers'))))"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
