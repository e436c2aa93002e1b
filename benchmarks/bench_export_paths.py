"""Artifacts of one model made by two export paths, side by side in one process: latency, fusions, fidelity.

Made for the move from optimum's TorchScript export (transformers 4) to torch.onnx's dynamo export
(transformers 5): the artifacts are given by label, and every (artifact, variant, shape) is timed in the
same interleaved rounds (benchmarks/bench/stats.py), so the ratios hold on a shared machine. Latency is
whole ``Model.embed`` calls on texts of exactly ``seq`` tokens (int8 runs one sequence per call, as users
get it).

    python benchmarks/bench_export_paths.py --artifact old=build/minilm-v4 --artifact new=build/minilm \
        --variants fp32-opt,int8 --shapes 1x128,8x128 --out benchmarks/results/export-paths-minilm
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from onnxformer.artifact.files import atomic_write_bytes, atomic_write_json
from onnxformer.artifact.manifest import load_manifest
from onnxformer.benchmarks.environment import environment
from onnxformer.benchmarks.stats import Budget, summarize, time_interleaved
from onnxformer.runtime import Model


def texts_of(model: Model, tokens: int, count: int) -> list[str]:
    """``count`` texts that tokenize to exactly ``tokens`` tokens (special tokens included)."""
    words = " ".join(["hello"] * tokens)
    ids = model.tokenizer.encodings([words], truncate=True)[0].ids
    if len(ids) < tokens:
        raise SystemExit(f"cannot make {tokens}-token texts: the tokenizer's limit is {len(ids)}")
    body = len([i for i in ids if i == ids[1]])  # "hello" tokens that fit beside the special tokens
    text = " ".join(["hello"] * (body - (len(ids) - tokens)))
    assert len(model.tokenizer.encodings([text], truncate=True)[0].ids) == tokens
    return [text] * count


def describe(directory: Path, variant: str) -> dict[str, Any]:
    """What the manifest says of the variant: exporter, fusions, fidelity."""
    manifest = load_manifest(directory)
    record = manifest.variant(variant)
    fp32 = manifest.variant("fp32").made_by
    return {"exporter": fp32.get("tool"), "transformers": manifest.versions.get("transformers"),
            "fused_ops": record.made_by.get("fused_ops"), "fidelity": record.fidelity,
            "excluded_nodes": len((record.made_by.get("budget") or {}).get("excluded_nodes") or [])}


def run(artifacts: dict[str, Path], variants: list[str], shapes: list[tuple[int, int]], threads: int,
        seconds: float) -> dict[str, Any]:
    rows = []
    models = {(label, v): Model.load(path, provider="cpu", variant=v, threads=threads, measure=False)
              for label, path in artifacts.items() for v in variants}
    for batch, seq in shapes:
        calls: list[Callable[[], Any]] = []
        keys = list(models)
        for key in keys:
            model = models[key]
            texts = texts_of(model, seq, batch)
            calls.append(lambda m=model, t=texts: m.embed(t))
        samples = time_interleaved(calls, Budget(warmup=3, seconds=seconds))
        for (label, variant), s in zip(keys, samples):
            rows.append({"artifact": label, "variant": variant, "batch": batch, "seq": seq, **summarize(s, batch, seq)})
    details = {label: {v: describe(path, v) for v in variants} for label, path in artifacts.items()}
    return {"environment": environment(), "threads": threads, "artifacts": {k: str(v) for k, v in artifacts.items()},
            "rows": rows, "details": details}


def markdown(report: dict[str, Any]) -> str:
    cpu = report["environment"]["cpu"]
    flags = " ".join(f for f, on in cpu["flags"].items() if on)
    labels = list(report["artifacts"])
    lines = [f"CPU: {cpu['model']} ({flags}), {report['threads']} threads, load average {cpu['load_average_1m']:.1f}",
             "", "| variant | shape | " + " | ".join(f"{l} p50 ms" for l in labels) + f" | {labels[-1]} vs {labels[0]} |",
             "|---|---|" + "---|" * (len(labels) + 1)]
    by = {(r["artifact"], r["variant"], r["batch"], r["seq"]): r for r in report["rows"]}
    for (_, variant, batch, seq) in sorted({(None, r["variant"], r["batch"], r["seq"]) for r in report["rows"]}):
        p50 = [by[(l, variant, batch, seq)]["p50_ms"] for l in labels]
        lines.append(f"| {variant} | {batch}×{seq} | " + " | ".join(f"{v:.2f}" for v in p50)
                     + f" | {p50[0] / p50[-1]:.2f}× |")
    lines += ["", "| artifact | variant | exporter | fused ops | min cosine | fp32 nodes kept |", "|---|---|---|---|---|---|"]
    for label, per in report["details"].items():
        for variant, d in per.items():
            fused = ", ".join(f"{k}×{n}" for k, n in (d["fused_ops"] or {}).items())
            cos = d["fidelity"].get("min_cosine")
            lines.append(f"| {label} | {variant} | {d['exporter']} (transformers {d['transformers']}) | {fused} | "
                         f"{cos:.4f} | {d['excluded_nodes']} |" if cos is not None else f"| {label} | {variant} | "
                         f"{d['exporter']} | {fused} | - | {d['excluded_nodes']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", action="append", required=True, help="LABEL=DIR (give two or more)")
    p.add_argument("--variants", default="fp32-opt,int8")
    p.add_argument("--shapes", default="1x128,8x128")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0, help="timing budget per configuration and shape")
    p.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    a = p.parse_args(argv)
    artifacts = dict(item.split("=", 1) for item in a.artifact)
    shapes = [tuple(int(x) for x in s.split("x")) for s in a.shapes.split(",")]
    report = run({k: Path(v) for k, v in artifacts.items()}, a.variants.split(","), shapes, a.threads, a.seconds)
    text = markdown(report)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(a.out.with_suffix(".json"), report)
        atomic_write_bytes(a.out.with_suffix(".md"), text.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
