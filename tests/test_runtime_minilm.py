"""The real all-MiniLM-L6-v2 through the full runtime path (length-aware batches, I/O binding, threads'
default provider resolution) equals sentence-transformers' encode."""
from __future__ import annotations

import random

import numpy as np
import pytest

from onnxformer.runtime import Model


@pytest.fixture(scope="module")
def mixed_texts(minilm_checkpoint) -> list[str]:
    words = [w for w in (minilm_checkpoint / "vocab.txt").read_text().splitlines() if w.isalpha() and len(w) > 2]
    rng = random.Random(1)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 250))) for _ in range(40)]
    return texts + ["hello", "Le cœur a ses raisons que la raison ne connaît point.", "🙂🚀 emoji only?!"]


@pytest.fixture(scope="module")
def st_vectors(minilm_checkpoint, mixed_texts) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_checkpoint), device="cpu").encode(mixed_texts, batch_size=32)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


@pytest.mark.parametrize("io_binding", [False, True])
def test_minilm_mixed_lengths_equal_sentence_transformers(minilm_artifact, mixed_texts, st_vectors, io_binding):
    model = Model.load(minilm_artifact, io_binding=io_binding)
    assert (model.provider, model.variant) == ("cpu", "fp32")
    ours = model.embed(mixed_texts, max_batch_tokens=2048)  # several length-sorted batches
    assert ours.shape == st_vectors.shape == (len(mixed_texts), 384)
    assert min_cosine(ours, st_vectors) >= 0.99999


def test_matryoshka_dimensions_match_sentence_transformers_truncate_dim(minilm_artifact, minilm_checkpoint):
    """embed(dimensions=k) is sentence-transformers' truncate_dim=k followed by its normalisation."""
    from sentence_transformers import SentenceTransformer

    from onnxformer.errors import InputError

    texts = ["ONNX is fast", "so is this runtime", "a third sentence"]
    st = SentenceTransformer(str(minilm_checkpoint), device="cpu", truncate_dim=64)
    theirs = st.encode(texts, normalize_embeddings=True)
    model = Model.load(minilm_artifact)
    ours = model.embed(texts, dimensions=64)
    assert ours.shape == theirs.shape == (3, 64)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    with pytest.raises(InputError, match="dimensions=385 is not available"):
        model.embed(texts, dimensions=385)
