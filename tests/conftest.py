"""Shared fixtures: tiny random checkpoints per encoder family and task, tiny generative artifacts, and the real
MiniLM (offline)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from devkit.checkpoints import LABELS, NER_LABELS, TASK_CLASSES, make_tiny_checkpoint, minilm_path, tiny_config  # noqa: F401


def manifest_json(directory: Path) -> dict:
    """The manifest as written on disk (tests that check the file's contract read the JSON itself)."""
    import json

    return json.loads((Path(directory) / "manifest.json").read_text())


def externalize(art: Path, location: str = "model.onnx_data", rewrite: str | None = None,
                graph: str = "fp32/model.onnx") -> Path:
    """Move the weights of ``graph`` (in variant fp32) to an external file, optionally point every location at
    ``rewrite``, and re-hash the variant so only the location check can refuse it."""
    import onnx

    from onnxformer.artifact.manifest import file_record, load_manifest

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


def check_greedy_rows_equal_solo(gen, scheduler, gap: int) -> list:
    """Every continuous batch's contract: greedy rows submitted every ``gap`` steps equal their solo runs — ids,
    finish reasons, text — whatever joins or leaves around them, and the batch ends empty. Returns the rows."""
    solo = [gen.generate_ids([p], max_new_tokens=m)[0] for p, m in zip(BATCH_PROMPTS, BATCH_MAX_NEW)]
    seqs = staggered(scheduler, BATCH_PROMPTS, BATCH_MAX_NEW, gap)
    assert [s.ids for s in seqs] == solo
    eos = set(gen.special.eos)
    assert [s.finish_reason for s in seqs] == ["stop" if ids[-1] in eos else "length" for ids in solo]
    assert [s.stream.text for s in seqs] == [gen.generate(p, max_new_tokens=m)
                                             for p, m in zip(BATCH_PROMPTS, BATCH_MAX_NEW)]
    assert not scheduler.busy
    return seqs


def check_a_failing_row(gen, scheduler, meanwhile: Callable[[object], None] | None = None) -> None:
    """Every continuous batch's contract: a row that fails mid-run ends alone with its error, and the rows beside
    it stay exactly their solo runs. ``meanwhile(scheduler)`` runs after the failure is armed (more trouble)."""
    solo = [gen.generate_ids([p], max_new_tokens=m)[0] for p, m in zip(BATCH_PROMPTS[:3], BATCH_MAX_NEW[:3])]
    seqs = [scheduler.submit(p, m) for p, m in zip(BATCH_PROMPTS[:3], BATCH_MAX_NEW[:3])]
    fail_at(seqs[1])
    if meanwhile is not None:
        meanwhile(scheduler)
    scheduler.run_until_done()
    assert seqs[1].finish_reason == "error" and str(seqs[1].error) == "injected"
    assert [seqs[0].ids, seqs[2].ids] == [solo[0], solo[2]]


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


def check_eos_settings_per_row(gen, scheduler) -> None:
    """Every continuous batch's contract: rows with their own min_tokens / ignore_eos in one batch (eos made the
    likeliest token by a logit bias, so the settings decide) equal their solo runs — ids and finish reasons."""
    eos_first = {t: 100.0 for t in gen.special.eos}
    rows = [(7, {}), (8, dict(logit_bias=eos_first, min_tokens=3)), (5, dict(logit_bias=eos_first, ignore_eos=True)),
            (6, dict(logit_bias=eos_first)), (9, dict(min_tokens=9, ignore_eos=True)), (4, dict(min_tokens=2))]
    solo = []
    for prompt, (m, opts) in zip(BATCH_PROMPTS, rows):
        run = gen.start(prompt, m, **opts)
        run.finish()
        solo.append((run.streams[0].ids, run.completions()[0].finish_reason))
    seqs = []
    for prompt, (m, opts) in zip(BATCH_PROMPTS, rows):
        seqs.append(scheduler.submit(prompt, m, **opts))
        scheduler.step()
    scheduler.run_until_done()
    assert [(s.ids, s.finish_reason) for s in seqs] == solo
    eos = gen.special.eos[0]
    assert [len(ids) for ids, _ in solo[1:4]] == [4, 5, 1] and solo[1][0][-1] == eos and eos not in solo[1][0][:3]
    assert solo[2] == ([eos] * 5, "length") and len(solo[4][0]) == 9


def staggered(scheduler, prompts: list[str], max_new: list[int], gap: int, **options) -> list:
    """Submit one request every ``gap`` steps while the batch runs, then run to the end."""
    seqs = []
    for p, m in zip(prompts, max_new):
        seqs.append(scheduler.submit(p, m, **options))
        for _ in range(gap):
            scheduler.step()
    scheduler.run_until_done()
    return seqs
