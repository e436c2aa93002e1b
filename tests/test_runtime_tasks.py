"""Task parity: onnxformer's classify/tag equal transformers' pipelines on tiny random checkpoints; answer equals
PyTorch window by window (transformers 5 has no question-answering pipeline)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from onnxformer.runtime import Model

TEXTS = [
    "Angela Merkel visited Paris and Berlin last week.",
    "hello",
    "The unbelievably long-winded explanation confused everyone at Microsoft headquarters.",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
    "email me at someone@example.com, or call +1 (555) 010-9999!",
]
CONTEXT = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
           "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. ") * 4


def pipeline_for(checkpoint, task: str):
    from transformers import AutoTokenizer, pipeline

    return pipeline(task, model=str(checkpoint), tokenizer=AutoTokenizer.from_pretrained(str(checkpoint)),
                    device="cpu")


@pytest.fixture(scope="module")
def classifier(tiny_artifact):
    return Model.load(tiny_artifact("bert", "text-classification"))


def test_classify_matches_pipeline(tiny_checkpoint, classifier):
    pipe = pipeline_for(tiny_checkpoint("bert", "text-classification"), "text-classification")
    ours = classifier.classify(TEXTS, top_k=None)
    theirs = pipe(TEXTS, top_k=None)
    for o, t in zip(ours, theirs):
        assert [x["label"] for x in o] == [x["label"] for x in t]
        np.testing.assert_allclose([x["score"] for x in o], [x["score"] for x in t], atol=1e-5)
    top1 = classifier.classify(TEXTS)
    assert [r[0]["label"] for r in top1] == [t[0]["label"] for t in theirs] and all(len(r) == 1 for r in top1)
    assert len(classifier.classify(TEXTS, top_k=2)[0]) == 2


def test_classify_sigmoid_when_manifest_says_so(tiny_artifact):
    model = Model.load(tiny_artifact("bert", "text-classification"))
    model.manifest = dataclasses.replace(model.manifest,
                                         postprocess=dataclasses.replace(model.manifest.postprocess, activation="sigmoid"))
    logits = model.run(model.tokenizer.encode(TEXTS[:2]).feeds)["logits"]
    scores = sorted((1 / (1 + np.exp(-logits[0]))).tolist(), reverse=True)
    np.testing.assert_allclose([x["score"] for x in model.classify(TEXTS[:2], top_k=None)[0]], scores, rtol=1e-5)


@pytest.mark.parametrize("aggregation", ["none", "simple", "first", "average", "max"])
def test_tag_matches_pipeline(tiny_checkpoint, tiny_artifact, aggregation):
    pipe = pipeline_for(tiny_checkpoint("bert", "token-classification"), "token-classification")
    model = Model.load(tiny_artifact("bert", "token-classification"))
    ours = model.tag(TEXTS, aggregation=aggregation)
    theirs = pipe(TEXTS, aggregation_strategy=aggregation)
    assert sum(len(t) for t in theirs) > 0  # the random head does predict entities
    for text, o, t in zip(TEXTS, ours, theirs):
        key = "entity" if aggregation == "none" else "entity_group"
        assert [(e[key], e["word"], e["start"], e["end"]) for e in o] == \
               [(e[key], e["word"], e["start"], e["end"]) for e in t]
        np.testing.assert_allclose([e["score"] for e in o], [float(e["score"]) for e in t], atol=1e-5)
        assert all(0 <= e["start"] < e["end"] <= len(text) for e in o)  # offsets index the original text


@pytest.mark.parametrize("family", ["bert", "electra"])
def test_answer_over_long_context_matches_pytorch(tiny_checkpoint, tiny_artifact, family):
    """transformers 5 removed its question-answering pipeline (the reference this test had): every window the
    runtime cuts gives PyTorch's logits, and every answer is a consistent span of the context."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    from onnxformer.runtime import qa

    reference = AutoModelForQuestionAnswering.from_pretrained(tiny_checkpoint(family, "question-answering")).eval()
    model = Model.load(tiny_artifact(family, "question-answering"))
    question = "Who designed the tower?"
    window, stride = qa.window_defaults(model.tokenizer.max_length, None, None)
    spans = model.tokenizer.spans(question, CONTEXT, window, stride)
    assert len(spans) >= 2  # the context really is split into overlapping windows
    for span in spans:
        feeds = {k: np.array([v], dtype=np.int64) for k, v in (("input_ids", span.ids), ("attention_mask",
                 span.attention_mask), ("token_type_ids", span.type_ids)) if k in model.input_names}
        ours = model.run(feeds)
        with torch.inference_mode():
            theirs = reference(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        for name in ("start_logits", "end_logits"):
            np.testing.assert_allclose(ours[name], theirs[name].numpy(), atol=1e-5)
    for kwargs in ({}, {"top_k": 3}, {"doc_stride": 32, "max_answer_len": 5}, {"handle_impossible_answer": True},
                   {"align_to_words": False, "top_k": 2}):
        ours = model.answer(question, CONTEXT, **kwargs)
        ours = ours if isinstance(ours, list) else [ours]
        assert len(ours) == kwargs.get("top_k", 1)
        scores = [a["score"] for a in ours]
        assert scores == sorted(scores, reverse=True) and all(0.0 <= v <= 1.0 for v in scores)
        assert all(CONTEXT[a["start"]:a["end"]] == a["answer"] for a in ours)
