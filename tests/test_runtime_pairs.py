"""Text pairs: cross-encoder reranking and pair classification, against sentence-transformers and transformers."""
from __future__ import annotations

import numpy as np
import pytest

from onnxformer.errors import InputError
from onnxformer.runtime import Model

QUERY = "how do I export a model to ONNX?"
DOCS = ["ONNX Runtime runs exported graphs fast.", "The weather is nice today.",
        "torch.onnx.export writes a model as an ONNX graph.", "Bananas are yellow."]


@pytest.fixture(scope="module")
def reranker_checkpoint(tmp_path_factory):
    """A tiny one-logit BERT cross-encoder (what sentence-transformers' CrossEncoder rerankers are)."""
    import torch
    from conftest import minilm_path, tiny_config
    from transformers import AutoModelForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    config = tiny_config("bert", "text-classification")
    config.num_labels, config.id2label, config.label2id = 1, {0: "LABEL_0"}, {"LABEL_0": 0}
    path = tmp_path_factory.mktemp("reranker")
    AutoModelForSequenceClassification.from_config(config).eval().save_pretrained(path)
    tok = BertTokenizerFast.from_pretrained(minilm_path(), model_max_length=128)
    tok.backend_tokenizer.no_padding()  # MiniLM's tokenizer.json pads every text to 128 tokens
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reranker(reranker_checkpoint, tmp_path_factory):
    from onnxformer.export import export_checkpoint

    out = tmp_path_factory.mktemp("reranker-art") / "a"
    export_checkpoint(str(reranker_checkpoint), out)
    return Model.load(out)


def test_rerank_matches_sentence_transformers_cross_encoder(reranker, reranker_checkpoint):
    from sentence_transformers import CrossEncoder

    theirs = CrossEncoder(str(reranker_checkpoint), device="cpu").rank(QUERY, DOCS, return_documents=True)
    ours = reranker.rerank(QUERY, DOCS, return_documents=True)
    assert [r["corpus_id"] for r in ours] == [r["corpus_id"] for r in theirs]
    assert [r["text"] for r in ours] == [r["text"] for r in theirs]
    np.testing.assert_allclose([r["score"] for r in ours], [float(r["score"]) for r in theirs], atol=1e-5)
    assert [r["corpus_id"] for r in reranker.rerank(QUERY, DOCS, top_k=2)] == [r["corpus_id"] for r in theirs[:2]]


def test_pair_inputs_match_the_transformers_pipeline(tiny_checkpoint, tiny_artifact):
    """Issue 16, defect 4: classify({"text": q, "text_pair": d}) classified the two keys as texts."""
    from transformers import pipeline

    clf = Model.load(tiny_artifact("bert", "text-classification"))
    pipe = pipeline("text-classification", model=str(tiny_checkpoint("bert", "text-classification")), device="cpu")
    theirs = pipe({"text": QUERY, "text_pair": DOCS[0]}, top_k=None)
    for given in ({"text": QUERY, "text_pair": DOCS[0]}, [(QUERY, DOCS[0])], [{"text": QUERY, "text_pair": DOCS[0]}]):
        (ours,) = clf.classify(given, top_k=None)
        assert [r["label"] for r in ours] == [r["label"] for r in theirs]
        np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in theirs], atol=1e-5)
    single = clf.classify([QUERY], top_k=None)[0]
    by_label = lambda rows: np.array([r["score"] for r in sorted(rows, key=lambda r: r["label"])])
    assert np.abs(by_label(single) - by_label(ours)).max() > 1e-6  # the pair was used, not the query alone


@pytest.mark.parametrize("bad,match", [
    ({"text": "a", "label": "b"}, "keys 'text' and 'text_pair'"),
    (["a", ("b", "c")], "mix of single texts and text pairs"),
    ([("a", 3)], "int where a text was expected"),
    ([("a", "")], "empty string"),
    ([], "non-empty list"),
])
def test_bad_pair_inputs_are_refused(tiny_artifact, bad, match):
    clf = Model.load(tiny_artifact("bert", "text-classification"))
    with pytest.raises(InputError, match=match):
        clf.classify(bad)


def test_rerank_routes_match_the_runtime_and_tei_shapes(reranker, tiny_artifact):
    """/v1/rerank (Cohere/Jina shape) and text-embeddings-inference's /rerank, against Model.rerank."""
    import httpx

    from devkit.servers import running_server

    expected = reranker.rerank(QUERY, DOCS)
    with running_server(lambda: reranker) as url:
        r = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 2,
                                                  "return_documents": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [x["index"] for x in body["results"]] == [e["corpus_id"] for e in expected[:2]]
        np.testing.assert_allclose([x["relevance_score"] for x in body["results"]],
                                   [e["score"] for e in expected[:2]], atol=1e-6)
        assert body["results"][0]["document"]["text"] == DOCS[expected[0]["corpus_id"]]
        assert body["usage"]["total_tokens"] > 0
        tei = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}).json()
        assert [x["index"] for x in tei] == [e["corpus_id"] for e in expected]
        np.testing.assert_allclose([x["score"] for x in tei], [e["score"] for e in expected], atol=1e-6)
        raw = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
        np.testing.assert_allclose([1 / (1 + np.exp(-x["score"])) for x in raw], [e["score"] for e in expected],
                                   atol=1e-5)
        bad = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS, "rank_fields": ["x"]})
        assert bad.status_code == 400 and "rank_fields" in bad.text
    with running_server(lambda: Model.load(tiny_artifact("bert", "feature-extraction"))) as url:
        r = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS})
        assert r.status_code == 400 and "/v1/rerank needs a text-classification model" in r.json()["error"]["message"]


def test_rerank_needs_a_classifier_and_documents(reranker, tiny_artifact):
    with pytest.raises(InputError, match="rerank\\(\\) needs a text-classification model"):
        Model.load(tiny_artifact("bert", "feature-extraction")).rerank(QUERY, DOCS)
    with pytest.raises(InputError, match="one query string and a list of document strings"):
        reranker.rerank(QUERY, "a single document")
