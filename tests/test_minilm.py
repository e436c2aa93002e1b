"""The real all-MiniLM-L6-v2: onnxformer's embeddings equal sentence-transformers' encode."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import manifest_json

from onnxformer.runtime import Model

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "hello",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "東京は日本の首都です。",
    "def mean(xs): return sum(xs) / len(xs)  # average",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "🙂🚀 emoji only?!",
    "a " * 120,
    " ".join(["Transformers turn tokens into contextual vectors."] * 30),  # > 256 tokens: truncated like ST
]


@pytest.fixture(scope="module")
def st_embeddings(minilm_checkpoint):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_checkpoint), device="cpu").encode(TEXTS, batch_size=4)


def test_manifest_records_sentence_transformers_config(minilm_artifact):
    m = manifest_json(minilm_artifact)
    assert m["name"] == "all-MiniLM-L6-v2"
    assert m["postprocess"]["pooling"] == "mean" and m["postprocess"]["normalize"] is True
    assert m["tokenizer"]["max_length"] == 256
    assert m["architecture"]["num_layers"] == 6 and m["architecture"]["hidden_size"] == 384


def test_embeddings_equal_sentence_transformers(minilm_artifact, st_embeddings):
    ours = Model.load(minilm_artifact).embed(TEXTS, truncate=True)
    assert ours.shape == st_embeddings.shape == (len(TEXTS), 384)
    cos = (ours * st_embeddings).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(st_embeddings, axis=1)
    assert cos.min() >= 0.99999, cos
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_runtime_refuses_tampered_file(minilm_artifact, copy_artifact):
    from onnxformer.errors import IntegrityError

    art = copy_artifact(minilm_artifact)
    with open(art / "fp32" / "model.onnx", "r+b") as f:
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(IntegrityError, match="fp32/model.onnx does not match the manifest"):
        Model.load(art)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_current_sentence_transformers_checkpoint_exports_with_truncate_dim_and_prompt(tmp_path, tiny_checkpoint,
                                                                                        pooling):
    """Issue 16, defect 1: checkpoints saved by today's sentence-transformers (``{"pooling_mode": "mean"}``) did
    not export; truncate_dim and prompts were dropped. Saved here by the installed sentence-transformers."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from onnxformer.export import export_checkpoint

    words = Transformer(str(tiny_checkpoint("bert")))
    st = SentenceTransformer(modules=[words, Pooling(words.get_embedding_dimension(), pooling), Normalize()],
                             device="cpu", truncate_dim=16, prompts={"query": "query: ", "doc": "passage: "},
                             default_prompt_name="query")
    st.save(str(tmp_path / "st"))
    res = export_checkpoint(str(tmp_path / "st"), tmp_path / "art")
    post = res.manifest.postprocess
    assert (post.pooling, post.normalize, post.truncate_dim, post.default_prompt_name) == (pooling, True, 16, "query")
    assert post.prompts == {"query": "query: ", "doc": "passage: "}
    reloaded = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    model = Model.load(tmp_path / "art")
    for kwargs in ({}, {"prompt_name": "doc"}, {"prompt": "custom: "}):
        theirs = reloaded.encode(TEXTS, **kwargs)
        ours = model.embed(TEXTS, truncate=True, **kwargs)  # sentence-transformers cuts at max_seq_length silently
        assert ours.shape == theirs.shape == (len(TEXTS), 16)
        cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
        assert cos.min() >= 0.99999, (kwargs, cos)
