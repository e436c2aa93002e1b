"""One text → one vector: the default CPU int8 variant gives the same text the same embedding whatever its
batch-mates, locally and through the server under concurrent load (issue 15, defect 1)."""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from devkit.servers import running_server
from onnxformer.artifact.manifest import PER_CALL, load_manifest
from onnxformer.quantize.pipeline import quantize_artifact
from onnxformer.runtime import Model

pytestmark = pytest.mark.timeout(300)

TARGET = "The same text must give the same vector whatever it is batched with."
MATES = ["hi", "ok", "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3, "def f(x):\n    return x ** 2",
         "Der schnelle braune Fuchs springt über den faulen Hund.", "数据 批处理 不应该 改变 向量", "9 8 7 6 5 4 3 2 1 0",
         "Serving many clients at once merges their requests into one model call.", "!!!", "x " * 60]
TOLERANCE = 1e-5  # 1 − cosine to the solo vector


def _one_minus_cos(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _batchings(n: int, seed: int = 0) -> list[tuple[list[str], int]]:
    """``n`` random batches holding TARGET at a random place among 1–7 random mates, with a random size cap."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        batch = rng.sample(MATES, rng.randint(1, 7))
        batch.insert(rng.randint(0, len(batch)), TARGET)
        out.append((batch, rng.randint(2, 8)))
    return out


@pytest.fixture(scope="module")
def int8_model(tiny_checkpoint, tmp_path_factory):
    """Tiny BERT whose encoder matrices are ×8 (random init leaves every activation range set by the same
    special tokens, which would hide the batch dependence), int8 with every node quantized."""
    import shutil

    import torch
    from transformers import AutoModel

    from onnxformer.export import export_checkpoint

    root = tmp_path_factory.mktemp("int8-invariance")
    src, ckpt = tiny_checkpoint("bert"), root / "ckpt"
    model = AutoModel.from_pretrained(src)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "encoder" in name and name.endswith("weight") and param.dim() == 2:
                param.mul_(8.0)
    model.save_pretrained(ckpt)
    for f in src.iterdir():
        if f.suffix in (".txt", ".json") and f.name != "config.json":
            shutil.copy(f, ckpt / f.name)
    export_checkpoint(str(ckpt), root / "artifact", task="feature-extraction")
    quantize_artifact(root / "artifact", "int8", budget=0.01, smooth=False)
    return Model.load(root / "artifact", variant="int8")


def test_dynamic_int8_is_recorded_per_call_and_its_graph_depends_on_batch_mates(int8_model):
    """The premise: the int8 graph itself changes a text's output with its batch-mates (so the tests below can
    fail), and the variant says so in the manifest."""
    assert load_manifest(int8_model.directory).variants["int8"].activation_scales == PER_CALL
    assert int8_model.one_sequence_per_call
    tok = int8_model.tokenizer
    solo = int8_model.run(tok.pad(tok.encodings([TARGET])))["last_hidden_state"][0]
    worst = 0.0
    for batch, _ in _batchings(20):
        out = int8_model.run(tok.pad(tok.encodings(batch)))["last_hidden_state"][batch.index(TARGET)]
        worst = max(worst, _one_minus_cos(out[: len(solo)].ravel(), solo.ravel()))
    assert worst > TOLERANCE, f"raw batched int8 unexpectedly batch-invariant ({worst:.2e})"


def test_same_text_in_100_random_batchings_matches_its_solo_vector(int8_model):
    solo = int8_model.embed([TARGET])[0]
    worst = 0.0
    for batch, size in _batchings(100, seed=1):
        vectors = int8_model.embed(batch, batch_size=size)
        worst = max(worst, _one_minus_cos(vectors[batch.index(TARGET)], solo))
    assert worst <= TOLERANCE, f"1 - cosine {worst:.2e} > {TOLERANCE}"


def test_same_text_through_the_server_under_concurrent_load_matches_its_solo_vector(int8_model):
    solo = int8_model.embed([TARGET])[0]
    batchings = _batchings(100, seed=2)

    def post(item: tuple[list[str], int], url: str) -> np.ndarray:
        batch, _ = item
        with httpx.Client(base_url=url, timeout=120) as http:
            r = http.post("/v1/embeddings", json={"input": batch})
            r.raise_for_status()
            return np.asarray(r.json()["data"][batch.index(TARGET)]["embedding"], dtype=np.float32)

    with running_server(lambda: int8_model, max_delay_ms=20) as url:
        with ThreadPoolExecutor(16) as pool:  # concurrent requests are merged into shared model calls
            vectors = list(pool.map(lambda item: post(item, url), batchings))
    worst = max(_one_minus_cos(v, solo) for v in vectors)
    assert worst <= TOLERANCE, f"1 - cosine {worst:.2e} > {TOLERANCE}"
